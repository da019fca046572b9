package systemtest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/orchestrator/dockerrt/dockertest"
)

// Docker runs the stack's workers as containers of image, on a network of their own named
// after the stack.
func Docker(image, stack string) Option {
	return func(c *system.Config) {
		c.Runtime = "docker"
		c.Docker = system.DockerConfig{Image: image, Network: stack, Stack: stack,
			AddHosts: []string{"host.docker.internal:host-gateway"}, StopTimeout: 5 * time.Second}
	}
}

// RideshareImage builds the rideshare image from this source tree and deploy/Dockerfile (as
// `make image` does, under a tag of the test's own), and removes it when the test ends.
func RideshareImage(t *testing.T, cli *client.Client) string {
	t.Helper()
	root := moduleRoot(t)
	start := time.Now()
	bin := dockertest.GoBinary(t, root, "./cmd/rideshare", "-tags", "timetzdata") // as `make build`
	dockerfile, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	files := append(dockertest.DirFiles(t, filepath.Join(root, "deploy", "rootfs"), "deploy/rootfs/"),
		dockertest.File{Name: "deploy/Dockerfile", Body: dockerfile},
		dockertest.File{Name: "bin/rideshare", Mode: 0o755, Body: bin})
	tag := fmt.Sprintf("rideshare:test-%06x", rand.Uint32()&0xffffff)
	dockertest.BuildImage(t, cli, tag, "deploy/Dockerfile", files)
	t.Logf("built image %s in %v", tag, time.Since(start).Round(time.Millisecond))
	return tag
}

// moduleRoot is the directory of go.mod above the test's working directory.
func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
