package natsq

import (
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerName is the embedded server's name, as JetStream names a stream's leader.
const ServerName = "rideshare"

// Server is the NATS server with JetStream that the orchestrator embeds.
type Server struct {
	// StoreDir holds JetStream's files (the sync log).
	StoreDir string
	// Host and Port to listen on for workers; Port -1 picks a free port.
	Host string
	Port int
	// Token is what every client must present (nats.Token): without it, anyone who reaches
	// the port could publish on writeQ or delete the sync log. Empty: no authentication,
	// for tests that start a server of their own.
	Token string
	// Sync is how JetStream makes the log durable: SyncAlways fsyncs every write before it is
	// acknowledged (an acknowledged write survives a power loss), else files are fsynced every
	// SyncInterval (the server's default, 2 minutes, when 0) and a crash of the machine may
	// lose up to that much; a crash of the process loses nothing either way.
	Sync Sync
	// Name is the server's name, unique in a cluster (JetStream names a stream's leader by
	// it); empty: ServerName.
	Name string
	// Cluster, if set, joins this server to the other orchestrator nodes' servers: one NATS
	// cluster whose JetStream keeps the sync log on several of them (Raft inside NATS).
	Cluster *Cluster

	srv *server.Server
}

// Cluster is how an embedded server joins its peers. Routes authenticate as user RouteUser
// with the deployment's token as password, so nothing without the token can join either.
type Cluster struct {
	// Listen is the host:port routes from the peers connect to.
	Listen string
	// Routes are the peers' route addresses (host:port); listing this node's own is harmless.
	Routes []string
	// Advertise, if set, is the host:port the peers are told to reach this node's routes at.
	Advertise string
}

// ClusterName is the name of the orchestrators' NATS cluster.
const ClusterName = "rideshare"

// RouteUser is the user a route between two orchestrator nodes authenticates as.
const RouteUser = "route"

// ServerName returns the server's name: Name, or ServerName.
func (s *Server) ServerName() string {
	if s.Name != "" {
		return s.Name
	}
	return ServerName
}

// clusterOpts turns Cluster into the server's options.
func (s *Server) clusterOpts(o *server.Options) error {
	c := s.Cluster
	if c == nil {
		return nil
	}
	if s.Token == "" {
		return fmt.Errorf("a cluster needs a token: routes authenticate with it")
	}
	host, port, err := splitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("cluster listen %q: %w", c.Listen, err)
	}
	o.Cluster = server.ClusterOpts{Name: ClusterName, Host: host, Port: port,
		Username: RouteUser, Password: s.Token, Advertise: c.Advertise,
		// A partitioned peer's routes are dropped within seconds, as clients' are.
		PingInterval: time.Second, MaxPingsOut: 3}
	for _, r := range c.Routes {
		if _, _, err := splitHostPort(r); err != nil {
			return fmt.Errorf("route %q: %w", r, err)
		}
		o.Routes = append(o.Routes, &url.URL{Scheme: "nats-route", User: url.UserPassword(RouteUser, s.Token), Host: r})
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

// Open starts the server and waits until it accepts connections.
func (s *Server) Open() error {
	host := s.Host
	if host == "" {
		host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName: s.ServerName(),
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
		// A token, not users: every client (orchestrator, workers) is equally trusted.
		Authorization: s.Token,
		SyncAlways:    s.Sync.Always,
		SyncInterval:  s.Sync.Interval,
	}
	if err := s.clusterOpts(opts); err != nil {
		return err
	}
	srv, err := server.NewServer(opts)
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

// Sync is JetStream's fsync policy (Server.Sync).
type Sync struct {
	Always   bool
	Interval time.Duration
}

// DefaultSync is the server's own default: fsync every two minutes.
const DefaultSync = "2m"

// ParseSync reads a --nats-sync value: "always", or an interval such as "2m".
func ParseSync(v string) (Sync, error) {
	if v == "always" {
		return Sync{Always: true}, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return Sync{}, fmt.Errorf("nats sync %q: want \"always\" or a positive interval such as 2m", v)
	}
	return Sync{Interval: d}, nil
}

func (s Sync) String() string {
	if s.Always {
		return "always"
	}
	if s.Interval == 0 {
		return DefaultSync
	}
	return s.Interval.String()
}

// Connect connects a client in this process, without a socket, with the server's token.
func (s *Server) Connect(name string, logger *slog.Logger) (*nats.Conn, error) {
	return Connect(s.ClientURL(), name, s.srv, logger, nats.Token(s.Token))
}

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
