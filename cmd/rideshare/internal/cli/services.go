package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/rideshare/rideshare/cmd/rideshare/system"
	"github.com/rideshare/rideshare/httpsvc"
	"github.com/rideshare/rideshare/httpsvc/gateway"
	"github.com/rideshare/rideshare/httpsvc/rides"
	"github.com/rideshare/rideshare/httpsvc/users"
	"github.com/rideshare/rideshare/orchestrator/client"
)

// serveUntilDone serves h on addr until ctx ends.
func serveUntilDone(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) error {
	return system.Serve(ctx, addr, h, httpsvc.Limits{}, logger)
}

// orchestratorsHelp is the help of the users' and rides' --orchestrator flag.
const orchestratorsHelp = "the orchestrator's base URL, or a comma-separated list of the orchestrator nodes' base URLs, tried in turn on refused connections and 503s"

func cmdUsers(ctx context.Context, args []string) error {
	fs := newFlags("users", "The users API (SPEC §4), backed by the orchestrator's database API.")
	listenAddr := fs.String("listen", "127.0.0.1:8081", "listen address")
	orch := fs.String("orchestrator", "http://127.0.0.1:8083", orchestratorsHelp)
	token := fs.String("admin-token", "", "bearer token for the orchestrator, if it requires one")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	s := &users.Service{DB: client.New(*orch, *token), Logger: logger.With("component", "users")}
	return serveUntilDone(ctx, *listenAddr, s.Handler(), logger)
}

func cmdRides(ctx context.Context, args []string) error {
	fs := newFlags("rides", "The rides API (SPEC §5), backed by the orchestrator's database API; users are checked through the load balancer.")
	listenAddr := fs.String("listen", "127.0.0.1:8082", "listen address")
	orch := fs.String("orchestrator", "http://127.0.0.1:8083", orchestratorsHelp)
	usersURL := fs.String("users-url", "http://127.0.0.1:8080", "where users are checked: the load balancer's base URL")
	origin := fs.String("origin", "http://127.0.0.1:8082", "this service's public address, sent as the Origin header of user checks")
	tz := fs.String("timezone", "UTC", "time zone ride timestamps are read in (IANA name)")
	token := fs.String("admin-token", "", "bearer token for the orchestrator, if it requires one")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return fmt.Errorf("--timezone: %w", err)
	}
	s := &rides.Service{DB: client.New(*orch, *token), UsersURL: *usersURL, Origin: *origin, Location: loc,
		Logger: logger.With("component", "rides")}
	return serveUntilDone(ctx, *listenAddr, s.Handler(), logger)
}

func cmdGateway(ctx context.Context, args []string) error {
	fs := newFlags("gateway", "The path router standing in for the cloud load balancer: /api/v1/users* → users, /api/v1/rides* → rides.")
	listenAddr := fs.String("listen", "127.0.0.1:8080", "listen address")
	usersURL := fs.String("users-url", "http://127.0.0.1:8081", "the users service's base URL")
	ridesURL := fs.String("rides-url", "http://127.0.0.1:8082", "the rides service's base URL")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	logger, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	g := &gateway.Gateway{UsersURL: *usersURL, RidesURL: *ridesURL, Logger: logger.With("component", "gateway")}
	return serveUntilDone(ctx, *listenAddr, g.Handler(), logger)
}
