package synclog_test

import (
	"testing"

	"github.com/rideshare/rideshare/broker/synclog/logtest"
)

// The JetStream log passes the contract the in-memory one (memlog) does.
func TestContract(t *testing.T) {
	logtest.Run(t, func(t *testing.T) logtest.Log { return openLog(t) })
}
