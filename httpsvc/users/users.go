// Package users is the users service: create, list, look up and delete users (SPEC §4). It
// keeps no data of its own; every operation goes to the database as a service.
package users

import (
	"context"
	"errors"
	"fmt"
	"github.com/rideshare/rideshare"
	"log/slog"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc"
	"github.com/rideshare/rideshare/httpsvc/openapi"
	"github.com/rideshare/rideshare/metrics"
	"github.com/rideshare/rideshare/orchestrator/client"
)

// DB is the database the service uses: the orchestrator's client (tests use an in-process
// SQLite store).
type DB interface {
	Write(ctx context.Context, w rideshare.Write) (rideshare.Result, error)
	Read(ctx context.Context, r rideshare.Read) ([]rideshare.Row, error)
	// Ping tells whether the database can serve, without a db read (which the
	// orchestrator's scaler would count).
	Ping(ctx context.Context) error
}

var _ DB = (*client.Client)(nil)

// ServiceName labels the service's metrics and logs.
const ServiceName = "users"

// Service serves the users API. Set the fields, then call Handler.
type Service struct {
	// DB is the database. Required.
	DB DB
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the service's metrics and is served on /metrics; nil means a
	// registry of the service's own.
	Registry *prometheus.Registry

	once    sync.Once
	handler http.Handler
	log     *slog.Logger
	counter *metrics.RequestCounter
}

// Handler returns the service's HTTP handler; every call returns the same one.
func (s *Service) Handler() http.Handler {
	s.once.Do(s.init)
	return s.handler
}

// Count is the service's request count, as GET /api/v1/_count answers it.
func (s *Service) Count() int64 {
	s.once.Do(s.init)
	return s.counter.Count()
}

func (s *Service) init() {
	s.log = httpsvc.Logger(s.Logger, ServiceName)
	if s.Registry == nil {
		s.Registry = metrics.NewRegistry()
	}
	s.counter = metrics.NewRequestCounter(ServiceName, s.Registry)
	h := func(fn httpsvc.HandlerFunc) http.HandlerFunc { return httpsvc.Handle(s.log, fn) }

	r := httpsvc.NewServiceRouter(ServiceName, s.log, s.Registry, s.counter, s.DB, openapi.Users)
	r.Handle("/api/v1/users", httpsvc.Methods{
		http.MethodPut: h(s.create),
		http.MethodGet: h(s.list),
	})
	r.Handle("/api/v1/users/{username}", httpsvc.Methods{
		http.MethodGet:    h(s.get),
		http.MethodDelete: h(s.delete),
	})
	r.Handle("/api/v1/db/clear", httpsvc.Methods{http.MethodPost: h(s.clear)})
	s.handler = r
}

// create is U1: PUT /api/v1/users {"username", "password"} → 201 {}.
func (s *Service) create(w http.ResponseWriter, r *http.Request) error {
	body, err := httpsvc.DecodeBody(w, r, "username", "password")
	if err != nil {
		return err
	}
	username, err := body.String("username")
	if err != nil {
		return err
	}
	password, err := body.String("password")
	if err != nil {
		return err
	}
	if username == "" {
		return httpsvc.BadRequest("username must not be empty")
	}
	if !IsSHA1Hex(password) {
		// Never echo the password, not even in an error.
		return httpsvc.BadRequest("password must be exactly 40 hexadecimal digits (a SHA-1 hash)")
	}
	_, err = s.DB.Write(r.Context(), rideshare.Write{
		Table:  "users",
		Insert: map[string]any{"username": username, "password": password},
	})
	if errors.Is(err, rideshare.ErrConstraint) {
		return httpsvc.BadRequest("username already taken")
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	httpsvc.Empty(w, http.StatusCreated)
	return nil
}

// IsSHA1Hex reports whether s is exactly 40 hexadecimal digits, in either case.
func IsSHA1Hex(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// delete is U2: DELETE /api/v1/users/{username} → 200 {}. The database's foreign keys remove
// the user's rides and joins in the same write.
func (s *Service) delete(w http.ResponseWriter, r *http.Request) error {
	username, err := httpsvc.PathParam(r, "username")
	if err != nil {
		return err
	}
	res, err := s.DB.Write(r.Context(), rideshare.Write{
		Table:  "users",
		Delete: &rideshare.Delete{Where: rideshare.Where{"username": username}},
	})
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	if res.Affected == 0 {
		return httpsvc.BadRequest("no such user")
	}
	httpsvc.Empty(w, http.StatusOK)
	return nil
}

// list is U3: GET /api/v1/users → 200 ["alice", …] in creation order, or 204.
func (s *Service) list(w http.ResponseWriter, r *http.Request) error {
	rows, err := s.DB.Read(r.Context(), rideshare.Read{
		Table:   "users",
		Columns: []string{"username"},
		Order:   []rideshare.Order{{Column: "id"}},
	})
	if err != nil {
		return fmt.Errorf("list users: %w", err)
	}
	if len(rows) == 0 {
		httpsvc.NoContent(w)
		return nil
	}
	names := make([]string, 0, len(rows))
	for _, row := range rows {
		name, ok := row["username"].(string)
		if !ok {
			return fmt.Errorf("list users: username is %T", row["username"])
		}
		names = append(names, name)
	}
	httpsvc.JSON(w, http.StatusOK, names)
	return nil
}

// get is U4: GET /api/v1/users/{username} → 200 {"username"} or 404. The rides service checks
// a user with it, so it reads with the default, strong consistency.
func (s *Service) get(w http.ResponseWriter, r *http.Request) error {
	username, err := httpsvc.PathParam(r, "username")
	if err != nil {
		return err
	}
	rows, err := s.DB.Read(r.Context(), rideshare.Read{
		Table:   "users",
		Columns: []string{"username"},
		Where:   rideshare.Where{"username": username},
		Limit:   1,
	})
	if err != nil {
		return fmt.Errorf("get user: %w", err)
	}
	if len(rows) == 0 {
		return httpsvc.Errorf(http.StatusNotFound, "no such user")
	}
	httpsvc.JSON(w, http.StatusOK, map[string]string{"username": username})
	return nil
}

// clear is U5: POST /api/v1/db/clear → 200 {}: every user goes, and with them every ride they
// created or joined.
func (s *Service) clear(w http.ResponseWriter, r *http.Request) error {
	_, err := s.DB.Write(r.Context(), rideshare.Write{
		Table:  "users",
		Delete: &rideshare.Delete{Where: rideshare.Where{}},
	})
	if err != nil {
		return fmt.Errorf("clear users: %w", err)
	}
	httpsvc.Empty(w, http.StatusOK)
	return nil
}
