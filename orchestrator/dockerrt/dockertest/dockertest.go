// Package dockertest helps tests that run containers on the real Docker Engine: it skips them
// (loudly) where no engine answers, builds images from files without a registry, and finds
// what a test left behind.
package dockertest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/rideshare/rideshare/orchestrator/dockerrt"
)

// Client returns a client for the engine named by the environment, or skips the test with a
// loud message when none answers.
func Client(tb testing.TB) *client.Client {
	tb.Helper()
	cli, err := dockerrt.NewClient()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		msg := fmt.Sprintf("\n*****************************************************************\n"+
			"SKIPPED %s: no Docker Engine answers at %s (%v).\n"+
			"The Docker worker runtime is NOT tested. Start dockerd (or set DOCKER_HOST).\n"+
			"*****************************************************************", tb.Name(), cli.DaemonHost(), err)
		fmt.Fprintln(os.Stderr, msg) // shown even without -v when the package is tested alone
		tb.Skip(msg)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// File is one file of an image build context.
type File struct {
	Name string // slash-separated path in the context
	Mode int64  // 0: 0644
	Body []byte
}

// DirFiles returns the files under dir (a path on disk) as context files under prefix.
func DirFiles(tb testing.TB, dir, prefix string) []File {
	tb.Helper()
	var out []File
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, File{Name: prefix + filepath.ToSlash(rel), Mode: int64(info.Mode().Perm()), Body: b})
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// BuildImage builds image tag from the given context files and dockerfile (a context path),
// and removes it when the test ends. Nothing is pulled: the Dockerfile must start FROM scratch
// or from an image the engine has.
func BuildImage(tb testing.TB, cli *client.Client, tag, dockerfile string, files []File) {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		// Parent directories first, so the context unpacks the same anywhere.
		parts := strings.Split(f.Name, "/")
		for i := 1; i < len(parts); i++ {
			d := strings.Join(parts[:i], "/") + "/"
			if !dirs[d] {
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Now()}); err != nil {
					tb.Fatal(err)
				}
			}
		}
		mode := f.Mode
		if mode == 0 {
			mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.Name, Mode: mode, Size: int64(len(f.Body)), Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(f.Body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := cli.ImageBuild(ctx, &buf, build.ImageBuildOptions{
		Tags: []string{tag}, Dockerfile: dockerfile, Remove: true, ForceRemove: true,
	})
	if err != nil {
		tb.Fatalf("build image %s: %v", tag, err)
	}
	defer resp.Body.Close()
	var log strings.Builder
	dec := json.NewDecoder(resp.Body)
	for {
		var m struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			break
		} else if err != nil {
			tb.Fatalf("build image %s: reading the engine's answer: %v\n%s", tag, err, log.String())
		}
		log.WriteString(m.Stream)
		if m.Error != "" {
			tb.Fatalf("build image %s: %s\n%s", tag, m.Error, log.String())
		}
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
			tb.Logf("remove image %s: %v", tag, err)
		}
	})
}

// GoBinary builds a static Linux binary of the Go package pkg (a directory, or a package
// path resolved from dir) and returns its contents.
func GoBinary(tb testing.TB, dir, pkg string, extraArgs ...string) []byte {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "bin")
	args := append([]string{"build", "-trimpath", "-ldflags", "-s -w", "-o", out}, extraArgs...)
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Leftovers lists the containers (any state), networks and volumes labelled with stack.
func Leftovers(ctx context.Context, cli *client.Client, stack string) ([]string, error) {
	return Labelled(ctx, cli, dockerrt.LabelStack+"="+stack)
}

// Labelled lists the containers (any state), networks and volumes with the label key=value.
func Labelled(ctx context.Context, cli *client.Client, label string) ([]string, error) {
	f := filters.NewArgs(filters.Arg("label", label))
	var out []string
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, err
	}
	for _, c := range cs {
		out = append(out, fmt.Sprintf("container %s (%s)", strings.Join(c.Names, ","), c.State))
	}
	ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
	if err != nil {
		return nil, err
	}
	for _, n := range ns {
		out = append(out, "network "+n.Name)
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
	if err != nil {
		return nil, err
	}
	for _, v := range vs.Volumes {
		out = append(out, "volume "+v.Name)
	}
	return out, nil
}

// Running returns the running containers labelled with stack and role, container ID to the
// PID the engine reports (State.Pid).
func Running(tb testing.TB, cli *client.Client, stack string) map[string]int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := cli.ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", dockerrt.LabelStack+"="+stack), filters.Arg("label", dockerrt.LabelRole+"="+dockerrt.RoleWorker))})
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]int{}
	for _, c := range cs {
		info, err := cli.ContainerInspect(ctx, c.ID)
		if err != nil {
			tb.Fatal(err)
		}
		if info.State != nil && info.State.Running {
			out[c.ID] = info.State.Pid
		}
	}
	return out
}

// Lines is an io.Writer that keeps what it is given, for looking at a container's output.
type Lines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *Lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Contains reports whether some line contains s.
func (l *Lines) Contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}

// String returns everything written so far.
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
