package httpsvc

import (
	"net/http"
	"time"
)

// Limits bound what one client can hold of a server: a connection that sends its request
// slowly, reads its answer slowly or sits idle is closed, and headers are capped.
type Limits struct {
	// ReadHeader bounds reading the request line and headers.
	ReadHeader time.Duration
	// Read bounds reading the whole request, body included: a client that trickles its body
	// byte by byte is cut off when it runs out.
	Read time.Duration
	// Write bounds the time from the end of the request's headers to the end of the answer.
	// It must exceed the longest a handler waits: a write through a failover (the
	// orchestrator's --write-timeout, 10s by default) behind a rides → users check.
	Write time.Duration
	// Idle bounds how long a kept-alive connection waits for its next request.
	Idle time.Duration
	// MaxHeaderBytes caps the request line and headers; beyond it the answer is 431.
	MaxHeaderBytes int
}

// DefaultLimits are every service's limits. Request bodies are at most 64 KiB (MaxBodyBytes; a few MiB for the orchestrator's batches), so
// 15 s to read one is generous for any real client.
var DefaultLimits = Limits{
	ReadHeader:     5 * time.Second,
	Read:           15 * time.Second,
	Write:          45 * time.Second,
	Idle:           2 * time.Minute,
	MaxHeaderBytes: 64 << 10,
}

// NewServer returns a server for h with the limits l; a zero field of l takes its default.
func NewServer(h http.Handler, l Limits) *http.Server {
	d := DefaultLimits
	pick := func(v, def time.Duration) time.Duration {
		if v > 0 {
			return v
		}
		return def
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: pick(l.ReadHeader, d.ReadHeader),
		ReadTimeout:       pick(l.Read, d.Read),
		WriteTimeout:      pick(l.Write, d.Write),
		IdleTimeout:       pick(l.Idle, d.Idle),
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}
