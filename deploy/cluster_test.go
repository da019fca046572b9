package deploy_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/systemtest"
	"github.com/rideshare/rideshare/orchestrator/dockerrt/dockertest"
)

type nodeInfo struct {
	Name       string `json:"name"`
	Up         bool   `json:"up"`
	Supervisor bool   `json:"supervisor"`
	LogLeader  bool   `json:"log_leader"`
}

// clusterView is GET /api/v1/cluster from url.
func clusterView(url string) ([]nodeInfo, error) {
	var nodes []nodeInfo
	return nodes, getJSON(url+"/api/v1/cluster", &nodes)
}

// usersCount is a strong count of the users through url (0 and the answer if it failed).
func usersCount(url string) (int, string) {
	r, err := call(http.MethodPost, url+"/api/v1/db/read", "", map[string]any{"table": "users", "count": true})
	if err != nil {
		return -1, err.Error()
	}
	var out struct {
		Rows []struct{ Count int } `json:"rows"`
	}
	if r.code != http.StatusOK || json.Unmarshal(r.body, &out) != nil || len(out.Rows) != 1 {
		return -1, r.String()
	}
	return out.Rows[0].Count, r.String()
}

// TestThreeDatabaseNodes runs deploy/cluster: three orchestrator nodes, each in a container of
// its own with its embedded NATS server, one JetStream cluster on the project's network, the
// workers containers beside them. Every node serves the database API and sees the other two;
// a write through one is read strongly through another; `docker kill` of the supervising
// node's container leaves the workers running, another node supervises and adopts them (the
// same containers), writes go on through the two left, and the killed node, started again,
// rejoins; nothing acknowledged is lost, and `down -v` leaves nothing behind.
func TestThreeDatabaseNodes(t *testing.T) {
	cli := needDocker(t)
	start := time.Now()
	image := systemtest.RideshareImage(t, cli)
	p := newProject(t, "rstest"+randomHex(3)+"cluster", "cluster/docker-compose.yml", "RIDESHARE_IMAGE="+image,
		"RIDESHARE_NATS_TOKEN="+randomHex(16), "RIDESHARE_PORT1=0", "RIDESHARE_PORT2=0", "RIDESHARE_PORT3=0")
	p.up()
	services := []string{"node1", "node2", "node3"}
	url := map[string]string{}
	for _, s := range services {
		url[s] = "http://" + p.published(s, 80)
	}
	eventually(t, 3*time.Minute, "three nodes up, one supervising", func() (bool, string) {
		nodes, err := clusterView(url["node1"])
		if err != nil {
			return false, err.Error()
		}
		up, sup := 0, 0
		for _, n := range nodes {
			if n.Up {
				up++
			}
			if n.Supervisor {
				sup++
			}
		}
		return len(nodes) == 3 && up == 3 && sup == 1, fmt.Sprintf("%+v", nodes)
	})
	eventually(t, 3*time.Minute, "one master and one slave", func() (bool, string) { return settled(url["node1"], 1) })
	t.Logf("cluster up after %v", time.Since(start).Round(time.Millisecond))

	// Writes through each node in turn; a strong read through every node sees all of them.
	written := 0
	write := func(through string) {
		t.Helper()
		written++
		want(t, http.StatusOK, "", http.MethodPost, url[through]+"/api/v1/db/write", "", map[string]any{
			"table": "users", "insert": map[string]any{"username": fmt.Sprintf("user%03d", written), "password": strings.Repeat("ab", 20)},
		})
	}
	for i := range 9 {
		write(services[i%3])
	}
	for _, s := range services {
		if n, r := usersCount(url[s]); n != written {
			t.Fatalf("strong count through %s: %d users (%s), want %d", s, n, r, written)
		}
	}

	var supervisor string
	nodes, err := clusterView(url["node1"])
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.Supervisor {
			supervisor = n.Name
		}
	}
	var left []string
	for _, s := range services {
		if s != supervisor {
			left = append(left, s)
		}
	}
	before := dockertest.Running(t, cli, p.name)
	if len(before) != 2 {
		t.Fatalf("%d worker containers running, want 2: %v", len(before), before)
	}
	p.must("kill", supervisor)
	eventually(t, 2*time.Minute, "another node supervising", func() (bool, string) {
		nodes, err := clusterView(url[left[0]])
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			if n.Supervisor && n.Up && n.Name != supervisor {
				return true, n.Name
			}
		}
		return false, fmt.Sprintf("%+v", nodes)
	})
	eventually(t, time.Minute, "the workers adopted", func() (bool, string) {
		ok, state := settled(url[left[0]], 1)
		if !ok {
			return false, state
		}
		return pidsMatch(t, cli, url[left[0]], p.name)
	})
	if after := dockertest.Running(t, cli, p.name); !maps.Equal(before, after) {
		t.Errorf("worker containers before %s was killed %v, after %v", supervisor, before, after)
	}
	for i := range 6 {
		write(left[i%2])
	}
	p.must("start", supervisor)
	url[supervisor] = "http://" + p.published(supervisor, 80) // a free port is picked again
	eventually(t, 2*time.Minute, supervisor+" back in the view and reading every write", func() (bool, string) {
		nodes, err := clusterView(url[supervisor])
		if err != nil {
			return false, err.Error()
		}
		up := 0
		for _, n := range nodes {
			if n.Up {
				up++
			}
		}
		if up != 3 {
			return false, fmt.Sprintf("%+v", nodes)
		}
		n, r := usersCount(url[supervisor])
		return n == written, r
	})
	for _, s := range services {
		if n, r := usersCount(url[s]); n != written {
			t.Errorf("strong count through %s after the rejoin: %d users (%s), want %d", s, n, r, written)
		}
	}
	if t.Failed() {
		return
	}
	p.must("down", "-v")
	ctx := t.Context()
	if leftover, err := leftovers(ctx, cli, p.name); err != nil {
		t.Fatal(err)
	} else if len(leftover) > 0 {
		t.Errorf("after docker-compose -p %s down -v: %s", p.name, strings.Join(leftover, "; "))
	}
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}
