#!/usr/bin/env bash
# images.sh — images for the third-party services (RabbitMQ, ZooKeeper, Prometheus, HAProxy)
# built on this machine from Debian's packages, so the Docker deployments need no registry:
#
#   1. base: a minimal bookworm root filesystem (debootstrap --variant=minbase), made once;
#   2. rideshare-<service>-base:local: a copy of it with the service's packages installed
#      (chroot apt-get, service start-up blocked by policy-rc.d), turned into an image with
#      `docker import`;
#   3. rideshare-<service>:local: deploy/images/<service>/Dockerfile on top (config, user,
#      ports, entry point, health check).
#
# Nothing is pulled. Every .deb is downloaded once into one package cache shared by the base
# and the four services; the cache and the base live outside the repository, under
# $RIDESHARE_IMAGES_CACHE (default /var/cache/rideshare-images).
#
# Idempotent: each image carries a label rideshare.inputs holding the hash of what it is made of
# (suite, mirror, packages, this recipe's version; for the top layer also the base image and
# the files of deploy/images/<service>/). A step whose image exists with the same hash is
# skipped, so a second run only checks. RIDESHARE_IMAGES_REBUILD=1 rebuilds everything (for
# example to pick up Debian's security updates).
#
# Usage (as root: debootstrap, chroot and mount need it):
#   scripts/images.sh [build] [SERVICE...]   build what is missing (default: all four)
#   scripts/images.sh list                   the images and their hashes
#
# Environment: RIDESHARE_IMAGES_CACHE, RIDESHARE_DEBIAN_MIRROR (default
# http://deb.debian.org/debian), RIDESHARE_DEBIAN_SECURITY (default
# http://deb.debian.org/debian-security; empty for none), RIDESHARE_IMAGES_TAG (default local).
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE=${RIDESHARE_IMAGES_CACHE:-/var/cache/rideshare-images}
SUITE=bookworm
MIRROR=${RIDESHARE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${RIDESHARE_DEBIAN_SECURITY-http://deb.debian.org/debian-security}
TAG=${RIDESHARE_IMAGES_TAG:-local}
# Bump when the way a base or a service's root filesystem is made changes: every image is then
# rebuilt on the next run.
RECIPE=3
ALL=(rabbitmq zookeeper prometheus haproxy)

log() { printf 'images: %s\n' "$*" >&2; }
die() {
	printf 'images: ERROR: %s\n' "$*" >&2
	exit 1
}

# packages SERVICE: the Debian packages its image holds.
packages() {
	case $1 in
	rabbitmq) echo rabbitmq-server ;;
	# Not the `zookeeper` package: it depends on default-jre, the full Java runtime with its X11
	# and sound libraries. The server is in libzookeeper-java; it needs only the headless runtime.
	zookeeper) echo libzookeeper-java default-jre-headless ;;
	prometheus) echo prometheus ;;
	haproxy) echo haproxy ;;
	*) die "unknown service $1 (want one of ${ALL[*]})" ;;
	esac
}

hash() { sha256sum | cut -c1-16; }

# label IMAGE: the image's rideshare.inputs label, empty when the image does not exist.
label() { docker image inspect -f '{{index .Config.Labels "rideshare.inputs"}}' "$1" 2>/dev/null || true; }

fresh() { [[ ${RIDESHARE_IMAGES_REBUILD:-0} != 1 && $(label "$1") == "$2" ]]; }

MOUNTS=()
umount_all() {
	local i
	for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
		umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true
	done
	MOUNTS=()
}
trap umount_all EXIT

# release DIR: unmount whatever an interrupted earlier run left mounted under DIR (the shared
# package cache, /proc), deepest first, so that removing DIR cannot reach through a mount.
release() {
	local dir=$1 m
	[[ -e $dir ]] || return 0
	dir=$(realpath "$dir")
	awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
		while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
}

bind() { # SRC DST
	mkdir -p "$2"
	mount --bind "$1" "$2"
	MOUNTS+=("$2")
}

# in_chroot ROOT CMD...: run CMD in ROOT with the shared package cache and lists, /proc, the
# host's resolver, and no service allowed to start (policy-rc.d).
in_chroot() {
	local root=$1
	shift
	bind "$CACHE/debs" "$root/var/cache/apt/archives"
	bind "$CACHE/lists" "$root/var/lib/apt/lists"
	mkdir -p "$root/proc"
	mount -t proc proc "$root/proc"
	MOUNTS+=("$root/proc")
	cp -L /etc/resolv.conf "$root/etc/resolv.conf"
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	local rc=0
	chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@" || rc=$?
	rm -f "$root/usr/sbin/policy-rc.d"
	: >"$root/etc/resolv.conf"
	umount_all
	return $rc
}

# apt_options: keep .debs in the shared cache (apt deletes them after installing by default in
# Debian's container-minded configs; debootstrap's base has no such config, but be explicit).
APT=(apt-get -q -y -o APT::Keep-Downloaded-Packages=true -o Dpkg::Use-Pty=0)

# slim ROOT: what an image need not carry: apt's caches and lists (the shared ones are
# mounted over them while apt runs; debootstrap leaves its own), logs, documentation but the
# licences, manual pages, translations.
slim() {
	local root=$1
	rm -rf "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin "$root/var/cache/debconf/"*-old \
		"$root/var/log/"*.log "$root/var/log/apt/"* "$root/tmp/"*
	# Files only: update-alternatives (openjdk's postinst) links into /usr/share/man/man1.
	find "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale" -not -type d -delete
	find "$root/var/cache/apt/archives" -maxdepth 1 -type f -delete
	find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
	find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
}

# ---------------------------------------------------------------- base root filesystem

base_hash() { printf '%s\n' "$RECIPE" "$SUITE" "$MIRROR" "$SECURITY" minbase | hash; }

build_base() {
	local h dir=$CACHE/base
	h=$(base_hash)
	if [[ ${RIDESHARE_IMAGES_REBUILD:-0} != 1 && -r $dir/.rideshare-inputs && $(<"$dir/.rideshare-inputs") == "$h" ]]; then
		return 0
	fi
	command -v debootstrap >/dev/null || install_debootstrap
	log "base: debootstrap --variant=minbase $SUITE from $MIRROR (packages cached in $CACHE/debs)"
	release "$dir.new"
	rm -rf "$dir.new"
	local start=$SECONDS
	debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$dir.new" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
		{
			tail -n 20 "$CACHE/debootstrap.log" >&2
			die "debootstrap failed (log: $CACHE/debootstrap.log)"
		}
	{
		echo "deb $MIRROR $SUITE main"
		echo "deb $MIRROR $SUITE-updates main"
		[[ -z $SECURITY ]] || echo "deb $SECURITY $SUITE-security main"
	} >"$dir.new/etc/apt/sources.list"
	slim "$dir.new"
	# Images hold no documentation beyond the licences, and no package lists.
	cat >"$dir.new/etc/dpkg/dpkg.cfg.d/rideshare-nodoc" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
	in_chroot "$dir.new" sh -c "${APT[*]} update && ${APT[*]} upgrade" >"$CACHE/base-upgrade.log" 2>&1 ||
		{
			tail -n 20 "$CACHE/base-upgrade.log" >&2
			die "apt-get upgrade in the base failed (log: $CACHE/base-upgrade.log)"
		}
	slim "$dir.new"
	echo "$h" >"$dir.new/.rideshare-inputs"
	rm -rf "$dir"
	mv "$dir.new" "$dir"
	log "base: done in $((SECONDS - start))s"
}

# ---------------------------------------------------------------- service base images

service_base_hash() { printf '%s\n' "$(base_hash)" "$RECIPE" "$(packages "$1")" | hash; }

build_service_base() {
	local svc=$1 h img root log pkgs
	img=rideshare-$svc-base:$TAG
	h=$(service_base_hash "$svc")
	fresh "$img" "$h" && return 0
	build_base
	pkgs=$(packages "$svc")
	root=$CACHE/rootfs-$svc
	log="$CACHE/$svc-install.log"
	log "$img: installing $pkgs"
	local start=$SECONDS
	release "$root"
	rm -rf "$root"
	cp -a "$CACHE/base" "$root"
	rm -f "$root/.rideshare-inputs"
	# A package missing from the mirror (superseded since the lists were fetched): refresh
	# the shared lists and try once more.
	if ! in_chroot "$root" sh -c "${APT[*]} install --no-install-recommends $pkgs" >"$log" 2>&1; then
		log "$img: install failed; refreshing the package lists and retrying"
		in_chroot "$root" sh -c "${APT[*]} update && ${APT[*]} install --no-install-recommends $pkgs" >>"$log" 2>&1 ||
			{
				tail -n 20 "$log" >&2
				die "apt-get install $pkgs failed (log: $log)"
			}
	fi
	if [[ $svc == zookeeper ]]; then
		# What the zookeeper package would have made: a system user owning the data directory.
		chroot "$root" useradd --system --home-dir /var/lib/zookeeper --no-create-home \
			--shell /usr/sbin/nologin --user-group zookeeper
		mkdir -p "$root/var/lib/zookeeper"
		chroot "$root" chown zookeeper:zookeeper /var/lib/zookeeper
	fi
	slim "$root"
	log "$img: docker import"
	tar -C "$root" --numeric-owner -c . |
		docker import \
			--change "LABEL rideshare.inputs=$h rideshare.images=base org.opencontainers.image.description=\"Debian $SUITE minbase with $pkgs\"" \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
			--change 'CMD ["bash"]' \
			- "$img" >/dev/null
	release "$root"
	rm -rf "$root"
	log "$img: done in $((SECONDS - start))s"
}

# ---------------------------------------------------------------- service images

service_hash() { # SERVICE: the base image's ID and every file of deploy/images/SERVICE
	local svc=$1
	{
		docker image inspect -f '{{.Id}}' "rideshare-$svc-base:$TAG"
		(cd "deploy/images/$svc" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
	} | hash
}

build_service() {
	local svc=$1 h img=rideshare-$1:$TAG
	[[ -r deploy/images/$svc/Dockerfile ]] || die "deploy/images/$svc/Dockerfile missing"
	build_service_base "$svc"
	h=$(service_hash "$svc")
	if fresh "$img" "$h"; then
		log "$img: up to date ($h)"
		return 0
	fi
	log "$img: docker build deploy/images/$svc"
	docker build --build-arg "BASE=rideshare-$svc-base:$TAG" --label "rideshare.inputs=$h" \
		--label rideshare.images=service -t "$img" "deploy/images/$svc" >"$CACHE/$svc-build.log" 2>&1 ||
		{
			tail -n 20 "$CACHE/$svc-build.log" >&2
			die "docker build of $img failed (log: $CACHE/$svc-build.log)"
		}
	log "$img: built ($h)"
}

install_debootstrap() {
	command -v debootstrap >/dev/null && return 0
	log "installing debootstrap (apt)"
	if ! apt-cache show debootstrap >/dev/null 2>&1; then
		apt-get update -q >/dev/null || die "apt-get update failed"
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >"$CACHE/apt-debootstrap.log" 2>&1 ||
		die "apt-get install debootstrap failed (log: $CACHE/apt-debootstrap.log)"
}

cmd=build
case ${1:-} in
build | list)
	cmd=$1
	shift
	;;
esac
services=("$@")
((${#services[@]})) || services=("${ALL[@]}")

case $cmd in
list)
	for svc in "${services[@]}"; do
		printf '%-32s %s\n' "rideshare-$svc:$TAG" "$(label "rideshare-$svc:$TAG")"
	done
	;;
build)
	[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot and mount need it)"
	command -v docker >/dev/null || die "docker not found"
	docker info >/dev/null 2>&1 || die "the Docker Engine does not answer (docker info)"
	for svc in "${services[@]}"; do packages "$svc" >/dev/null; done
	mkdir -p "$CACHE/debs/partial" "$CACHE/lists/partial"
	# One run at a time (make test may start it from several places); the lock is not passed on.
	exec 8>"$CACHE/lock"
	flock -w 1800 8 || die "another images.sh holds $CACHE/lock"
	start=$SECONDS
	for svc in "${services[@]}"; do build_service "$svc"; done
	# Images replaced by a rebuild are left untagged: remove them.
	docker image prune -f --filter label=rideshare.images >/dev/null
	log "ready after $((SECONDS - start))s: $(printf "rideshare-%s:$TAG " "${services[@]}")"
	;;
esac
