// Package deploy_test runs the Docker deployments of deploy/ for real: the three-instance shape
// (deploy/users, deploy/rides, deploy/database) as separate Compose projects, each on its own
// network as if on its own machine, behind HAProxy (deploy/lb) with the cloud load balancer's
// rules, joined only the way the cloud joins them: ports published on the host, reached from
// the containers at host.docker.internal. RabbitMQ, ZooKeeper, Prometheus and HAProxy are the
// images `make images` builds from Debian's packages; the programs' image is built from this
// source tree.
//
// The tests need the Docker Engine, docker-compose and those images. Without them they are
// skipped, loudly, unless RIDESHARE_REQUIRE_DOCKER=1 (make test), which makes them fail.
package deploy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"
	"github.com/rideshare/rideshare/orchestrator/dockerrt/dockertest"
)

// EnvRequireDocker makes a missing Docker Engine, docker-compose or image a failure.
const EnvRequireDocker = "RIDESHARE_REQUIRE_DOCKER"

// The images scripts/images.sh builds (make images).
var serviceImages = []string{"rideshare-rabbitmq:local", "rideshare-zookeeper:local",
	"rideshare-prometheus:local", "rideshare-haproxy:local"}

// unavailable skips the test, or fails it when Docker is required.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv(EnvRequireDocker) == "1" {
		t.Fatalf("%s (%s=1)", msg, EnvRequireDocker)
	}
	msg = fmt.Sprintf("\n*****************************************************************\n"+
		"SKIPPED %s: %s\nThe Docker deployments are NOT tested.\n"+
		"*****************************************************************", t.Name(), msg)
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
}

// needDocker checks for the engine, docker-compose and the service images.
func needDocker(t *testing.T) *client.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("starts Docker Compose projects")
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		unavailable(t, "docker-compose not found")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		unavailable(t, "no Docker Engine answers (docker info: %v: %s)", err, bytes.TrimSpace(out))
	}
	cli := dockertest.Client(t)
	for _, img := range serviceImages {
		if _, _, err := cli.ImageInspectWithRaw(ctx, img); err != nil {
			unavailable(t, "image %s missing: run `make images` (scripts/images.sh)", img)
		}
	}
	return cli
}

// gatewayAddr is the address host.docker.internal (host-gateway) stands for in a container:
// the default bridge's. What is published there, the host and every container reach.
func gatewayAddr(t *testing.T) string {
	t.Helper()
	if ifc, err := net.InterfaceByName("docker0"); err == nil {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	out, err := exec.Command("docker", "network", "inspect", "bridge", "-f", "{{range .IPAM.Config}}{{.Gateway}} {{end}}").Output()
	if f := strings.Fields(string(out)); err == nil && len(f) > 0 {
		return f[0]
	}
	t.Fatalf("cannot tell the Docker bridge's address (docker0): %v", err)
	return ""
}

// freePorts are n ports free on addr now. The Compose projects must know each other's ports
// before they start (the rides instance checks users through the load balancer, which
// forwards to rides), so they cannot all be left to the engine to pick. The port is drawn below
// the kernel's ephemeral range, where the engine picks the ports published as 0 (Prometheus
// here, other tests' containers), so that none of those can take it before the project starts.
func freePorts(t *testing.T, addr string, n int) []int {
	t.Helper()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 1000 {
			t.Fatalf("no %d free ports on %s", n, addr)
		}
		port := 20000 + mrand.IntN(12000) // 20000–31999; the ephemeral range starts at 32768
		if slices.Contains(ports, port) {
			continue
		}
		if l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port))); err == nil {
			l.Close()
			ports = append(ports, port)
		}
	}
	return ports
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// project is one Compose project: one instance of the deployment.
type project struct {
	t    *testing.T
	name string
	file string
	env  []string
}

func newProject(t *testing.T, name, file string, env ...string) *project {
	abs, err := filepath.Abs(file)
	if err != nil {
		t.Fatal(err)
	}
	return &project{t: t, name: name, file: abs, env: env}
}

func (p *project) compose(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-p", p.name, "-f", p.file}, args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	return cmd.CombinedOutput()
}

func (p *project) must(args ...string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := p.compose(ctx, args...)
	if err != nil {
		p.t.Fatalf("docker-compose -p %s %s: %v\n%s", p.name, strings.Join(args, " "), err, out)
	}
	p.t.Logf("docker-compose -p %s -f %s %s: %v", p.name, filepath.Base(filepath.Dir(p.file)), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return string(out)
}

// up starts the project and, whatever happens to the test, takes it down with its volumes at
// the end (after printing its logs if the test failed).
func (p *project) up() {
	p.t.Helper()
	p.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if p.t.Failed() {
			out, _ := p.compose(ctx, "logs", "--no-color", "--tail", "60")
			p.t.Logf("logs of %s:\n%s", p.name, out)
		}
		if out, err := p.compose(ctx, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			p.t.Logf("docker-compose -p %s down: %v\n%s", p.name, err, out)
		}
	})
	p.must("up", "-d")
}

// published is the host address of service's port, as `docker-compose port` says.
func (p *project) published(service string, port int) string {
	p.t.Helper()
	return strings.TrimSpace(p.must("port", service, strconv.Itoa(port)))
}

// leftovers lists what the engine still holds of the project: containers, networks and volumes
// Compose labelled with it, and containers and networks the orchestrator labelled with its stack.
func leftovers(ctx context.Context, cli *client.Client, name string) ([]string, error) {
	out, err := dockertest.Leftovers(ctx, cli, name)
	if err != nil {
		return nil, err
	}
	project, err := dockertest.Labelled(ctx, cli, "com.docker.compose.project="+name)
	return append(out, project...), err
}

// ---------------------------------------------------------------- HTTP

var httpClient = &http.Client{Timeout: 15 * time.Second}

type reply struct {
	code   int
	body   []byte
	header http.Header
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.code, bytes.TrimSpace(r.body)) }

// call sends a request (body as JSON unless nil); token, if set, as the bearer token.
func call(method, url, token string, body any) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: b, header: resp.Header}, err
}

// want sends a request and requires the status (and the body, if wantBody is not empty).
func want(t *testing.T, code int, wantBody, method, url, token string, body any) reply {
	t.Helper()
	r, err := call(method, url, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if r.code != code || (wantBody != "" && string(bytes.TrimSpace(r.body)) != wantBody) {
		want := strconv.Itoa(code)
		if wantBody != "" {
			want += " " + wantBody
		}
		t.Fatalf("%s %s: got %s, want %s", method, url, r, want)
	}
	return r
}

// eventually polls cond until it holds, failing with cond's last word after timeout: for
// state that changes on its own (a worker replaced, a scaling decision), where the outside has
// no event to wait on.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	start := time.Now()
	for {
		ok, state := cond()
		if ok {
			t.Logf("%s: after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type workerInfo struct {
	ID    string `json:"id"`
	PID   int    `json:"pid"`
	Role  string `json:"role"`
	Ready bool   `json:"ready"`
}

func workers(orch string) ([]workerInfo, error) {
	var ws []workerInfo
	return ws, getJSON(orch+"/api/v1/workers", &ws)
}

// getJSON GETs url and decodes a 200 answer into into.
func getJSON(url string, into any) error {
	r, err := call(http.MethodGet, url, "", nil)
	if err != nil {
		return err
	}
	if r.code != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, r)
	}
	return json.Unmarshal(r.body, into)
}

// settled says whether the workers are one ready master and slaves ready slaves, none of them
// a PID in gone.
func settled(orch string, slaves int, gone ...int) (bool, string) {
	ws, err := workers(orch)
	if err != nil {
		return false, err.Error()
	}
	masters, ready := 0, 0
	for _, w := range ws {
		if slices.Contains(gone, w.PID) || !w.Ready {
			return false, fmt.Sprintf("%+v", ws)
		}
		switch w.Role {
		case "master":
			masters++
		case "slave":
			ready++
		}
	}
	return masters == 1 && ready == slaves, fmt.Sprintf("%+v", ws)
}

// pidsMatch says whether GET /api/v1/worker/list equals the PIDs the engine reports for the
// stack's worker containers.
func pidsMatch(t *testing.T, cli *client.Client, orch, stack string) (bool, string) {
	r, err := call(http.MethodGet, orch+"/api/v1/worker/list", "", nil)
	if err != nil {
		return false, err.Error()
	}
	var list []int
	if err := json.Unmarshal(r.body, &list); err != nil {
		return false, r.String()
	}
	var inspected []int
	for _, pid := range dockertest.Running(t, cli, stack) {
		inspected = append(inspected, pid)
	}
	slices.Sort(inspected)
	return slices.Equal(list, inspected), fmt.Sprintf("worker/list %v, docker inspect %v", list, inspected)
}

func crash(t *testing.T, orch, token, what string) int {
	t.Helper()
	want(t, http.StatusUnauthorized, "", http.MethodPost, orch+"/api/v1/crash/"+what, "", nil)
	r := want(t, http.StatusOK, "", http.MethodPost, orch+"/api/v1/crash/"+what, token, nil)
	var pids []int
	if err := json.Unmarshal(r.body, &pids); err != nil || len(pids) != 1 {
		t.Fatalf("crash/%s: %s", what, r)
	}
	t.Logf("crash/%s: killed pid %d", what, pids[0])
	return pids[0]
}

// ---------------------------------------------------------------- the test

// TestThreeInstancesBehindHAProxy is the course's final-project check on the deployment of
// deploy/README.md: users, rides, joins and `_count` through the load balancer, `db/clear`,
// crashing the slave and the master, the worker list against the engine's PIDs, scaling out
// and in; then every expression of the Grafana dashboard evaluated by the database instance's
// Prometheus; then `docker-compose down -v` on each instance leaves nothing behind.
func TestThreeInstancesBehindHAProxy(t *testing.T) {
	cli := needDocker(t)
	start := time.Now()
	image := systemtest.RideshareImage(t, cli)
	gw := gatewayAddr(t)
	id := randomHex(3)
	token := randomHex(16)
	ports := freePorts(t, gw, 4)
	dbPort, usersPort, ridesPort, lbPort := ports[0], ports[1], ports[2], ports[3]

	// The database instance's Prometheus scrapes the other two at their published ports.
	targets := t.TempDir()
	if err := os.Chmod(targets, 0o755); err != nil { // read by the container's prometheus user
		t.Fatal(err)
	}
	sd := fmt.Sprintf("- targets: [\"host.docker.internal:%d\"]\n  labels: {job: users}\n"+
		"- targets: [\"host.docker.internal:%d\"]\n  labels: {job: rides}\n", usersPort, ridesPort)
	if err := os.WriteFile(filepath.Join(targets, "instances.yml"), []byte(sd), 0o644); err != nil {
		t.Fatal(err)
	}

	common := []string{"RIDESHARE_IMAGE=" + image, "RIDESHARE_PUBLISH_ADDR=" + gw, "RIDESHARE_ADMIN_TOKEN=" + token,
		"RIDESHARE_LOG_LEVEL=info"}
	db := newProject(t, "rstest"+id+"db", "database/docker-compose.yml", append(common,
		"RIDESHARE_PORT="+strconv.Itoa(dbPort),
		// Short enough to see a scale-out and a scale-in; at most two slaves, so the burst
		// below is capped (and the dashboard's capped panel has data) on a small machine.
		"RIDESHARE_SCALE_INTERVAL=8s", "RIDESHARE_MAX_SLAVES=2",
		"RIDESHARE_PROMETHEUS_ADDR=127.0.0.1", "RIDESHARE_PROMETHEUS_PORT=0",
		"RIDESHARE_PROMETHEUS_TARGETS="+targets)...)
	orchURL := fmt.Sprintf("http://host.docker.internal:%d", dbPort)
	users := newProject(t, "rstest"+id+"users", "users/docker-compose.yml", append(common,
		"RIDESHARE_PORT="+strconv.Itoa(usersPort), "RIDESHARE_ORCHESTRATOR="+orchURL)...)
	rides := newProject(t, "rstest"+id+"rides", "rides/docker-compose.yml", append(common,
		"RIDESHARE_PORT="+strconv.Itoa(ridesPort), "RIDESHARE_ORCHESTRATOR="+orchURL,
		fmt.Sprintf("RIDESHARE_USERS_URL=http://host.docker.internal:%d", lbPort),
		fmt.Sprintf("RIDESHARE_ORIGIN=http://%s:%d", gw, ridesPort))...)
	lb := newProject(t, "rstest"+id+"lb", "lb/docker-compose.yml", append(common,
		"RIDESHARE_PORT="+strconv.Itoa(lbPort),
		fmt.Sprintf("RIDESHARE_USERS_ADDR=host.docker.internal:%d", usersPort),
		fmt.Sprintf("RIDESHARE_RIDES_ADDR=host.docker.internal:%d", ridesPort),
		"RIDESHARE_LB_CHECK_INTERVAL=1s")...)

	db.up()
	users.up()
	rides.up()
	lb.up()
	orch := "http://" + db.published("orchestrator", 80)
	usersURL := "http://" + users.published("users", 80)
	ridesURL := "http://" + rides.published("rides", 80)
	lbURL := "http://" + lb.published("lb", 80)
	promURL := "http://" + db.published("prometheus", 9090)

	eventually(t, 3*time.Minute, "the database instance ready", func() (bool, string) {
		r, err := call(http.MethodGet, orch+"/readyz", "", nil)
		if err != nil {
			return false, err.Error()
		}
		return r.code == http.StatusOK, r.String()
	})
	for _, u := range []string{usersURL, ridesURL} {
		eventually(t, time.Minute, u+" ready", func() (bool, string) {
			r, err := call(http.MethodGet, u+"/readyz", "", nil)
			if err != nil {
				return false, err.Error()
			}
			return r.code == http.StatusOK, r.String()
		})
	}
	// Both backends healthy in HAProxy (its checks on /readyz): GET /api/v1/users answers
	// from users (204, no users yet) and a bad ride query from rides (400) instead of 503.
	eventually(t, time.Minute, "the load balancer routing to both instances", func() (bool, string) {
		a, err := call(http.MethodGet, lbURL+"/api/v1/users", "", nil)
		if err != nil {
			return false, err.Error()
		}
		b, err := call(http.MethodGet, lbURL+"/api/v1/rides?source=x", "", nil)
		if err != nil {
			return false, err.Error()
		}
		return a.code == http.StatusNoContent && b.code == http.StatusBadRequest, a.String() + " / " + b.String()
	})
	t.Logf("three instances and the load balancer up after %v", time.Since(start).Round(time.Millisecond))

	t.Run("database instance containers", func(t *testing.T) {
		checkDatabaseContainers(t, cli, db.name, orch)
		// The queues are RabbitMQ's, in the rideshare virtual host, and the orchestrator and
		// both workers hold ZooKeeper sessions: the containers are used, not only run.
		queues := strings.Fields(db.must("exec", "-T", "rabbitmq", "rabbitmqctl", "-q", "list_queues", "-p", "rideshare", "name"))
		for _, q := range []string{"writeQ", "readQ", "responseQ"} {
			if !slices.Contains(queues, q) {
				t.Errorf("RabbitMQ queues %v: no %s", queues, q)
			}
		}
		eventually(t, 30*time.Second, "ZooKeeper sessions of the orchestrator and both workers", func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := db.compose(ctx, "exec", "-T", "zookeeper", "bash", "-c",
				"exec 3<>/dev/tcp/127.0.0.1/2181 && printf srvr >&3 && cat <&3")
			m := regexp.MustCompile(`(?m)^Connections: (\d+)`).FindSubmatch(out)
			if err != nil || m == nil {
				return false, fmt.Sprintf("%v: %s", err, out)
			}
			n, _ := strconv.Atoi(string(m[1]))
			return n >= 3, string(out)
		})
	})

	t.Run("load balancer container", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cs, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+lb.name))})
		if err != nil || len(cs) != 1 {
			t.Fatalf("load balancer containers: %d, %v", len(cs), err)
		}
		eventually(t, time.Minute, "HAProxy healthy", func() (bool, string) {
			info, err := cli.ContainerInspect(ctx, cs[0].ID)
			if err != nil {
				return false, err.Error()
			}
			if info.Config.User != "haproxy" {
				t.Fatalf("HAProxy runs as %q, want haproxy", info.Config.User)
			}
			if info.State.Health == nil {
				return false, "no health check"
			}
			return info.State.Health.Status == "healthy", info.State.Health.Status
		})
	})

	t.Run("final project flow", func(t *testing.T) {
		finalProjectFlow(t, lbURL, usersURL, ridesURL)
	})

	t.Run("crash slave and master", func(t *testing.T) {
		want(t, http.StatusCreated, "{}", http.MethodPut, lbURL+"/api/v1/users", "",
			map[string]string{"username": "carol", "password": strings.Repeat("ab", 20)})
		eventually(t, time.Minute, "one master and one slave", func() (bool, string) { return settled(orch, 1) })
		eventually(t, 30*time.Second, "worker/list = docker inspect PIDs", func() (bool, string) {
			return pidsMatch(t, cli, orch, db.name)
		})
		slave := crash(t, orch, token, "slave")
		eventually(t, 2*time.Minute, "a new slave for the crashed one", func() (bool, string) { return settled(orch, 1, slave) })
		master := crash(t, orch, token, "master")
		eventually(t, 2*time.Minute, "a new master and a new slave", func() (bool, string) { return settled(orch, 1, master) })
		eventually(t, 30*time.Second, "worker/list = docker inspect PIDs", func() (bool, string) {
			return pidsMatch(t, cli, orch, db.name)
		})
		// Written before both crashes, read from a slave made after them.
		want(t, http.StatusOK, `{"username":"carol"}`, http.MethodGet, lbURL+"/api/v1/users/carol", "", nil)
	})

	t.Run("scale out and in", func(t *testing.T) {
		// 120 db reads in a few seconds: at least one 8 s interval counts over 40, so the rule
		// asks for 3 slaves, capped to RIDESHARE_MAX_SLAVES=2.
		load(t, lbURL, 120, 0)
		// Then about 4 reads a second (2 slaves' worth an interval) until the second slave
		// serves, so that a quiet interval does not scale in before it is seen.
		halt := steadyLoad(lbURL, false)
		defer halt() // also when the wait below fails
		eventually(t, time.Minute, "scaled out to 2 slaves", func() (bool, string) { return settled(orch, 2) })
		halt()
		eventually(t, 30*time.Second, "worker/list = docker inspect PIDs", func() (bool, string) {
			return pidsMatch(t, cli, orch, db.name)
		})
		// No reads: the next interval counts 0, so back to the 1-slave minimum.
		eventually(t, time.Minute, "scaled in to 1 slave", func() (bool, string) { return settled(orch, 1) })
		eventually(t, 30*time.Second, "worker/list = docker inspect PIDs", func() (bool, string) {
			return pidsMatch(t, cli, orch, db.name)
		})
	})

	t.Run("dashboard queries", func(t *testing.T) {
		dashboardQueries(t, promURL, lbURL, []string{"orchestrator", "users", "rides", "prometheus"})
	})

	if t.Failed() {
		return // the clean-ups take everything down, with logs
	}
	t.Run("down leaves nothing", func(t *testing.T) {
		for _, p := range []*project{lb, rides, users, db} {
			p.must("down", "-v")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			left, err := leftovers(ctx, cli, p.name)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if len(left) > 0 {
				t.Errorf("after docker-compose -p %s down -v: %s", p.name, strings.Join(left, "; "))
			}
		}
	})
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}

// checkDatabaseContainers: `docker ps` on the database instance shows the orchestrator,
// RabbitMQ, ZooKeeper, Prometheus and two workers, one master and one slave; the third-party
// services are healthy and run as their own unprivileged users.
func checkDatabaseContainers(t *testing.T, cli *client.Client, name, orch string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	eventually(t, time.Minute, "one master and one slave", func() (bool, string) { return settled(orch, 1) })
	cs, services, workerCount := projectContainers(ctx, t, cli, name)
	if want := []string{"orchestrator", "prometheus", "rabbitmq", "zookeeper"}; !slices.Equal(services, want) || workerCount != 2 {
		t.Errorf("docker ps: services %v and %d workers, want %v and 2 (master, slave)", services, workerCount, want)
	}
	wantUser := map[string]string{"rabbitmq": "rabbitmq", "zookeeper": "zookeeper", "prometheus": "prometheus"}
	for _, c := range cs {
		svc := c.Labels["com.docker.compose.service"]
		if wantUser[svc] == "" {
			continue
		}
		eventually(t, 2*time.Minute, svc+" healthy", func() (bool, string) {
			info, err := cli.ContainerInspect(ctx, c.ID)
			if err != nil {
				return false, err.Error()
			}
			if info.Config.User != wantUser[svc] {
				t.Fatalf("%s runs as %q, want %q", svc, info.Config.User, wantUser[svc])
			}
			if info.State.Health == nil {
				return false, "no health check"
			}
			return info.State.Health.Status == "healthy", info.State.Health.Status
		})
	}
}

// projectContainers lists the running containers of a Compose project: all of them, the
// services' names (sorted) and how many are workers the orchestrator started.
func projectContainers(ctx context.Context, t *testing.T, cli *client.Client, project string) (cs []container.Summary, services []string, workers int) {
	t.Helper()
	cs, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "com.docker.compose.project="+project))})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Labels["rideshare.role"] == "worker" {
			workers++
		} else {
			services = append(services, c.Labels["com.docker.compose.service"])
		}
	}
	slices.Sort(services)
	return cs, services, workers
}

// finalProjectFlow runs the course's checks through the load balancer; `_count` and
// `db/clear` on each instance directly, since the load balancer does not route them.
func finalProjectFlow(t *testing.T, lb, usersURL, ridesURL string) {
	pw := strings.Repeat("3d725c5ee5", 4)
	for _, u := range []string{usersURL, ridesURL} {
		want(t, http.StatusOK, "{}", http.MethodDelete, u+"/api/v1/_count", "", nil)
	}
	// Not routed: the load balancer's fixed 404, from neither instance.
	want(t, http.StatusNotFound, `{"error": "not found"}`, http.MethodGet, lb+"/api/v1/_count", "", nil)
	want(t, http.StatusNotFound, `{"error": "not found"}`, http.MethodPost, lb+"/api/v1/db/clear", "", nil)
	want(t, http.StatusNotFound, `{"error": "not found"}`, http.MethodGet, lb+"/api/v1/other", "", nil)

	// users: 2 created, 1 refused (taken), 1 list = 4 requests
	want(t, http.StatusCreated, "{}", http.MethodPut, lb+"/api/v1/users", "", map[string]string{"username": "alice", "password": pw})
	want(t, http.StatusCreated, "{}", http.MethodPut, lb+"/api/v1/users", "", map[string]string{"username": "bob", "password": pw})
	want(t, http.StatusBadRequest, "", http.MethodPut, lb+"/api/v1/users", "", map[string]string{"username": "alice", "password": pw})
	want(t, http.StatusOK, `["alice","bob"]`, http.MethodGet, lb+"/api/v1/users", "", nil)

	// rides: create, query, join, show, count = 5 requests; create and join check the user
	// through the load balancer: 2 more requests for users.
	r := want(t, http.StatusCreated, "{}", http.MethodPost, lb+"/api/v1/rides", "",
		map[string]any{"created_by": "alice", "timestamp": "21-08-2030:00-00-00", "source": 1, "destination": 2})
	loc := r.header.Get("Location")
	m := regexp.MustCompile(`^/api/v1/rides/(\d+)$`).FindStringSubmatch(loc)
	if m == nil {
		t.Fatalf("POST /api/v1/rides: Location %q", loc)
	}
	rideID := m[1]
	want(t, http.StatusOK, fmt.Sprintf(`[{"rideId":%s,"username":"alice","timestamp":"21-08-2030:00-00-00"}]`, rideID),
		http.MethodGet, lb+"/api/v1/rides?source=1&destination=2", "", nil)
	want(t, http.StatusOK, "{}", http.MethodPost, lb+"/api/v1/rides/"+rideID, "", map[string]string{"username": "bob"})
	want(t, http.StatusOK, fmt.Sprintf(`{"rideId":%s,"created_by":"alice","users":["bob"],"timestamp":"21-08-2030:00-00-00","source":1,"destination":2}`, rideID),
		http.MethodGet, lb+"/api/v1/rides/"+rideID, "", nil)
	want(t, http.StatusOK, "[1]", http.MethodGet, lb+"/api/v1/rides/count", "", nil)

	want(t, http.StatusOK, "[6]", http.MethodGet, usersURL+"/api/v1/_count", "", nil)
	want(t, http.StatusOK, "[5]", http.MethodGet, ridesURL+"/api/v1/_count", "", nil)
	// Reading the count is not counted.
	want(t, http.StatusOK, "[6]", http.MethodGet, usersURL+"/api/v1/_count", "", nil)

	// db/clear on each instance: rides first (the users stay), then users.
	want(t, http.StatusOK, "{}", http.MethodPost, ridesURL+"/api/v1/db/clear", "", nil)
	want(t, http.StatusOK, "[0]", http.MethodGet, lb+"/api/v1/rides/count", "", nil)
	want(t, http.StatusOK, `["alice","bob"]`, http.MethodGet, lb+"/api/v1/users", "", nil)
	want(t, http.StatusOK, "{}", http.MethodPost, usersURL+"/api/v1/db/clear", "", nil)
	want(t, http.StatusNoContent, "", http.MethodGet, lb+"/api/v1/users", "", nil)
	// Neither clear was counted: users 6 + 2 lists, rides 5 + 1 count.
	want(t, http.StatusOK, "[8]", http.MethodGet, usersURL+"/api/v1/_count", "", nil)
	want(t, http.StatusOK, "[6]", http.MethodGet, ridesURL+"/api/v1/_count", "", nil)
}

// load sends n requests through the load balancer, 8 at a time: user reads (db reads), and
// every rides-th one (if rides > 0) a ride creation (a db write and a user check) and a ride
// query. It needs the user "carol".
func load(t *testing.T, lb string, n, rides int) {
	t.Helper()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			check := func(r reply, err error, code int) {
				if err == nil && r.code != code {
					err = fmt.Errorf("got %s, want %d", r, code)
				}
				if err != nil {
					errs <- err
				}
			}
			r, err := call(http.MethodGet, lb+"/api/v1/users/carol", "", nil)
			check(r, err, http.StatusOK)
			if rides > 0 && i%rides == 0 {
				r, err = call(http.MethodPost, lb+"/api/v1/rides", "",
					map[string]any{"created_by": "carol", "timestamp": "01-01-2031:00-00-00", "source": 3, "destination": 4})
				check(r, err, http.StatusCreated)
				r, err = call(http.MethodGet, lb+"/api/v1/rides?source=3&destination=4", "", nil)
				check(r, err, http.StatusOK)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("load: %v", err)
	}
	t.Logf("load: %d requests in %v", n, time.Since(start).Round(time.Millisecond))
}

// steadyLoad sends about 4 requests a second through the load balancer until the returned
// function is called: a user read (a db read), and with rides a ride created (a db write and a
// user check) and queried each second. Outcomes are not checked: load() does that.
func steadyLoad(lb string, rides bool) (halt func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = call(http.MethodGet, lb+"/api/v1/users/carol", "", nil)
				if rides && i%4 == 0 {
					_, _ = call(http.MethodPost, lb+"/api/v1/rides", "",
						map[string]any{"created_by": "carol", "timestamp": "01-01-2031:00-00-00", "source": 3, "destination": 4})
					_, _ = call(http.MethodGet, lb+"/api/v1/rides?source=3&destination=4", "", nil)
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(stop) }); <-done }
}

// dashboardQueries evaluates every expression of the Grafana dashboard through Prometheus's
// HTTP API after a short load, with Grafana's variables replaced as Grafana would (a rate
// window of one minute, every service, the dashboard's range); each must return at least one
// number (not only NaN: a quantile of no requests is no data).
func dashboardQueries(t *testing.T, prom, lb string, jobs []string) {
	eventually(t, time.Minute, "Prometheus scraping "+strings.Join(jobs, ", "), func() (bool, string) {
		r, err := call(http.MethodGet, prom+"/api/v1/targets?state=active", "", nil)
		if err != nil {
			return false, err.Error()
		}
		var v struct {
			Data struct {
				ActiveTargets []struct {
					Labels map[string]string `json:"labels"`
					Health string            `json:"health"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := json.Unmarshal(r.body, &v); err != nil {
			return false, r.String()
		}
		up := map[string]bool{}
		for _, tg := range v.Data.ActiveTargets {
			up[tg.Labels["job"]] = tg.Health == "up"
		}
		for _, j := range jobs {
			if !up[j] {
				return false, fmt.Sprint(up)
			}
		}
		return true, fmt.Sprint(up)
	})
	// The check itself can fail: a series nobody exports is no data.
	if n, state := evaluate(prom, `rideshare_no_such_series`); n != 0 {
		t.Fatalf("a query of no series gave %d samples: %s", n, state)
	}
	exprs := dashboardExprs(t, "grafana/dashboards/rideshare.json")
	replacer := strings.NewReplacer("$__rate_interval", "1m", "$__range", "15m", "$service", ".*")
	// A burst, then a steady trickle while the queries run: a rate needs an increase between
	// two scrapes, and a series born in the burst (a restarted orchestrator's) shows none.
	load(t, lb, 60, 4)
	halt := steadyLoad(lb, true)
	defer halt()
	deadline := time.Now().Add(90 * time.Second)
	for _, e := range exprs {
		q := replacer.Replace(e.expr)
		var last string
		for {
			n, state := evaluate(prom, q)
			if n > 0 {
				break
			}
			last = state
			if time.Now().After(deadline) {
				t.Errorf("panel %q: %s returns no data: %s", e.panel, q, last)
				break
			}
			time.Sleep(time.Second)
		}
	}
	t.Logf("%d dashboard expressions evaluated", len(exprs))
}

type panelExpr struct{ panel, expr string }

func dashboardExprs(t *testing.T, file string) []panelExpr {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string                  `json:"title"`
		Targets []struct{ Expr string } `json:"targets"`
		Panels  []json.RawMessage       `json:"panels"`
	}
	var out []panelExpr
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatal(err)
			}
			for _, tg := range p.Targets {
				if tg.Expr != "" {
					out = append(out, panelExpr{p.Title, tg.Expr})
				}
			}
			walk(p.Panels)
		}
	}
	var d struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	walk(d.Panels)
	if len(out) == 0 {
		t.Fatalf("%s: no expressions", file)
	}
	return out
}

// evaluate runs an instant query and returns how many of its samples are numbers.
func evaluate(prom, q string) (int, string) {
	r, err := call(http.MethodGet, prom+"/api/v1/query?query="+url.QueryEscape(q), "", nil)
	if err != nil {
		return 0, err.Error()
	}
	var v struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.body, &v); err != nil || v.Status != "success" {
		return 0, r.String()
	}
	n := 0
	for _, s := range v.Data.Result {
		str, _ := s.Value[1].(string)
		if f, err := strconv.ParseFloat(str, 64); err == nil && !math.IsNaN(f) {
			n++
		}
	}
	return n, r.String()
}

// TestOneDockerHost runs the top-level docker-compose.yml: gateway, users, rides, orchestrator,
// RabbitMQ, ZooKeeper and Prometheus as containers of one project, every port published on a
// free one; requests through the gateway, a master crash, the dashboard's expressions on its
// Prometheus, then `docker-compose down -v` leaves nothing.
func TestOneDockerHost(t *testing.T) {
	cli := needDocker(t)
	start := time.Now()
	image := systemtest.RideshareImage(t, cli)
	token := randomHex(16)
	p := newProject(t, "rstest"+randomHex(3)+"host", "../docker-compose.yml", "RIDESHARE_IMAGE="+image,
		"RIDESHARE_ADMIN_TOKEN="+token, "RIDESHARE_GATEWAY_PORT=0", "RIDESHARE_USERS_PORT=0",
		"RIDESHARE_RIDES_PORT=0", "RIDESHARE_ORCHESTRATOR_PORT=0", "RIDESHARE_PROMETHEUS_PORT=0",
		"RIDESHARE_RABBITMQ_UI_PORT=0")
	p.up()
	gateway := "http://" + p.published("gateway", 80)
	orch := "http://" + p.published("orchestrator", 80)
	prom := "http://" + p.published("prometheus", 9090)

	eventually(t, 3*time.Minute, "one master and one slave", func() (bool, string) { return settled(orch, 1) })
	eventually(t, time.Minute, "the gateway routing to users", func() (bool, string) {
		r, err := call(http.MethodGet, gateway+"/api/v1/users", "", nil)
		if err != nil {
			return false, err.Error()
		}
		return r.code == http.StatusNoContent, r.String()
	})
	t.Logf("stack up after %v", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, services, workerCount := projectContainers(ctx, t, cli, p.name)
	if want := []string{"gateway", "orchestrator", "prometheus", "rabbitmq", "rides", "users", "zookeeper"}; !slices.Equal(services, want) || workerCount != 2 {
		t.Errorf("docker ps: services %v and %d workers, want %v and 2", services, workerCount, want)
	}

	want(t, http.StatusCreated, "{}", http.MethodPut, gateway+"/api/v1/users", "",
		map[string]string{"username": "carol", "password": strings.Repeat("ab", 20)})
	want(t, http.StatusCreated, "{}", http.MethodPost, gateway+"/api/v1/rides", "",
		map[string]any{"created_by": "carol", "timestamp": "01-01-2031:00-00-00", "source": 3, "destination": 4})
	want(t, http.StatusNotFound, "", http.MethodGet, gateway+"/api/v1/_count", "", nil)
	master := crash(t, orch, token, "master")
	eventually(t, 2*time.Minute, "a new master and a new slave", func() (bool, string) { return settled(orch, 1, master) })
	eventually(t, 30*time.Second, "worker/list = docker inspect PIDs", func() (bool, string) {
		return pidsMatch(t, cli, orch, p.name)
	})
	want(t, http.StatusOK, `{"username":"carol"}`, http.MethodGet, gateway+"/api/v1/users/carol", "", nil)

	// An orchestrator restart leaves the workers running; the new one adopts them.
	before := dockertest.Running(t, cli, p.name)
	p.must("restart", "orchestrator")
	orch = "http://" + p.published("orchestrator", 80) // a free port is picked again
	eventually(t, time.Minute, "the workers adopted by the restarted orchestrator", func() (bool, string) {
		ok, state := settled(orch, 1)
		if !ok {
			return false, state
		}
		return pidsMatch(t, cli, orch, p.name)
	})
	if after := dockertest.Running(t, cli, p.name); !maps.Equal(before, after) {
		t.Errorf("worker containers before the restart %v, after %v", before, after)
	}
	want(t, http.StatusOK, `{"username":"carol"}`, http.MethodGet, gateway+"/api/v1/users/carol", "", nil)

	dashboardQueries(t, prom, gateway, []string{"gateway", "users", "rides", "orchestrator", "prometheus"})
	if t.Failed() {
		return
	}
	p.must("down", "-v")
	left, err := leftovers(ctx, cli, p.name)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("after docker-compose -p %s down -v: %s", p.name, strings.Join(left, "; "))
	}
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}

// TestRegistryAlternative: with deploy/registry.env the compose files run the official images
// of RabbitMQ, ZooKeeper and Prometheus under the same service names, ports, settings and
// volumes: the resolved configurations differ in those image names only. (Nothing can be
// pulled here, so this is as far as a machine without a registry can check that path.)
func TestRegistryAlternative(t *testing.T) {
	if testing.Short() {
		t.Skip("runs docker-compose")
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		unavailable(t, "docker-compose not found")
	}
	envFile, err := filepath.Abs("registry.env")
	if err != nil {
		t.Fatal(err)
	}
	official := []string{"image: rabbitmq:3.12-management", "image: zookeeper:3.8", "image: prom/prometheus:v2.53.0"}
	for _, file := range []string{"../docker-compose.yml", "database/docker-compose.yml"} {
		p := newProject(t, "rstestconfig", file)
		local := strings.Split(p.must("config"), "\n")
		registry := strings.Split(p.must("--env-file", envFile, "config"), "\n")
		if len(local) != len(registry) {
			t.Errorf("%s: %d lines of configuration with registry.env, %d without", file, len(registry), len(local))
			continue
		}
		var changed []string
		for i := range local {
			if local[i] != registry[i] {
				changed = append(changed, strings.TrimSpace(registry[i]))
				if !strings.HasPrefix(strings.TrimSpace(local[i]), "image: rideshare-") {
					t.Errorf("%s: registry.env changes %q into %q", file, local[i], registry[i])
				}
			}
		}
		slices.Sort(changed)
		wantChanged := slices.Clone(official)
		slices.Sort(wantChanged)
		if !slices.Equal(changed, wantChanged) {
			t.Errorf("%s: registry.env changes %v, want %v", file, changed, wantChanged)
		}
	}
}
