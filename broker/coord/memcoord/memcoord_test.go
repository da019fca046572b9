package memcoord_test

import (
	"testing"

	"github.com/rideshare/rideshare/broker/coord"
	"github.com/rideshare/rideshare/broker/coord/coordtest"
	"github.com/rideshare/rideshare/broker/coord/memcoord"
)

// The in-memory coordinator passes the contract zkcoord and kvcoord pass; killing a session
// is Expire.
func TestContract(t *testing.T) {
	svc := memcoord.NewService()
	coordtest.Run(t, func(t *testing.T) coord.Coordinator {
		s := svc.Session()
		t.Cleanup(func() { s.Close() })
		return s
	}, func(t *testing.T, c coord.Coordinator) { c.(*memcoord.Session).Expire() })
}
