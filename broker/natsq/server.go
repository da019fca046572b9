package natsq

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Server is the NATS server with JetStream that the orchestrator embeds.
type Server struct {
	// StoreDir holds JetStream's files (the sync log).
	StoreDir string
	// Host and Port to listen on for workers; Port -1 picks a free port.
	Host string
	Port int

	srv *server.Server
}

// Open starts the server and waits until it accepts connections.
func (s *Server) Open() error {
	host := s.Host
	if host == "" {
		host = "127.0.0.1"
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "rideshare",
		Host:       host,
		Port:       s.Port,
		JetStream:  true,
		StoreDir:   s.StoreDir,
		NoSigs:     true,
		// A paused or partitioned client (a SIGSTOPped master) is dropped within seconds,
		// so its queue subscriptions stop taking requests.
		PingInterval: time.Second,
		MaxPingsOut:  2,
		MaxPayload:   8 << 20,
	})
	if err != nil {
		return fmt.Errorf("configure nats server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats server not ready within 10s")
	}
	s.srv = srv
	return nil
}

// ClientURL is the address workers connect to.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// InProcess lets a client in this process connect without a socket.
func (s *Server) InProcess() *server.Server { return s.srv }

// Close shuts the server down.
func (s *Server) Close() error {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	return nil
}
