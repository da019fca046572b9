package system

import "testing"

// The log is kept on three replicas as soon as there are three servers to hold them.
func TestNATSReplicas(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want int
	}{
		{Config{}, 1},
		{Config{NATS: "nats://a:4222"}, 1},
		{Config{NATS: "nats://a:4222,nats://b:4222"}, 1},
		{Config{NATS: "nats://a:4222,nats://b:4222,nats://c:4222"}, 3},
		{Config{NATS: "nats://a:4222,nats://b:4222,nats://c:4222,nats://d:4222,nats://e:4222"}, 3},
		{Config{NATS: "nats://a:4222,nats://b:4222,nats://c:4222", NATSReplicas: 1}, 1},
		{Config{NATSReplicas: 5}, 5},
	} {
		if got := c.cfg.natsReplicas(); got != c.want {
			t.Errorf("%+v: %d replicas, want %d", c.cfg, got, c.want)
		}
	}
}
