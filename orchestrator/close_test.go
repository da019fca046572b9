package orchestrator

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rideshare/rideshare/broker/coord"
)

// heldRuntime counts the runtime calls under way.
type heldRuntime struct {
	Runtime
	calls atomic.Int32
}

func (r *heldRuntime) Start(ctx context.Context, id string) (int, error) {
	r.calls.Add(1)
	defer r.calls.Add(-1)
	return r.Runtime.Start(ctx, id)
}

func (r *heldRuntime) Stop(ctx context.Context, id string) error {
	r.calls.Add(1)
	defer r.calls.Add(-1)
	return r.Runtime.Stop(ctx, id)
}

func (r *heldRuntime) Kill(id string) error {
	r.calls.Add(1)
	defer r.calls.Add(-1)
	return r.Runtime.Kill(id)
}

func (r *heldRuntime) List(ctx context.Context) (map[string]int, error) {
	r.calls.Add(1)
	defer r.calls.Add(-1)
	return r.Runtime.List(ctx)
}

// heldCoord counts the watches whose channel is not closed yet; a watch's end waits for
// release.
type heldCoord struct {
	coord.Coordinator
	release chan struct{}
	watches atomic.Int32
}

func (c *heldCoord) Watch(ctx context.Context) (<-chan struct{}, error) {
	in, err := c.Coordinator.Watch(ctx)
	if err != nil {
		return nil, err
	}
	c.watches.Add(1)
	out := make(chan struct{}, 1)
	go func() {
		for range in {
			select {
			case out <- struct{}{}:
			default:
			}
		}
		<-c.release
		c.watches.Add(-1)
		close(out)
	}()
	return out, nil
}

// Close returns only once nothing the supervisor started runs any more: a scale-in stop that
// takes its time, or the watch (its channel closed late), is waited for.
func TestCloseWaitsForWhatTheSupervisorStarted(t *testing.T) {
	for _, holdWatch := range []bool{false, true} {
		name := "a scale-in stop under way"
		if holdWatch {
			name = "the watch"
		}
		t.Run(name, func(t *testing.T) {
			watchEnds := make(chan struct{})
			if !holdWatch {
				close(watchEnds)
			}
			var hr *heldRuntime
			var hc *heldCoord
			s := mustSupervised(t, 2, supOpts{holdStops: !holdWatch, wrap: func(c coord.Coordinator, rt Runtime) (coord.Coordinator, Runtime) {
				hc, hr = &heldCoord{Coordinator: c, release: watchEnds}, &heldRuntime{Runtime: rt}
				return hc, hr
			}})
			var w *fake
			if !holdWatch {
				victim := roleOf(s.o.Workers(), coord.RoleSlave)[1]
				s.o.SetSlaves(1)
				w = s.fleet.worker(t, victim.ID)
				select {
				case <-w.stopping:
				case <-time.After(10 * time.Second):
					t.Fatal("no scale-in stop in 10s")
				}
			}
			// What is held is let go late, so that a Close that does not wait for it returns
			// first: then the counts below are not 0.
			time.AfterFunc(200*time.Millisecond, func() {
				s.release()
				if holdWatch {
					close(watchEnds)
				}
			})
			if err := s.o.Close(); err != nil {
				t.Fatal(err)
			}
			if n := hr.calls.Load(); n != 0 {
				t.Errorf("%d runtime calls under way after Close", n)
			}
			if n := hc.watches.Load(); n != 0 {
				t.Errorf("%d watches open after Close", n)
			}
			if w != nil {
				select {
				case <-w.ended:
				default:
					t.Error("the stopped slave still shuts down after Close")
				}
			}
		})
	}
}
