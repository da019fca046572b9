// Package rides is the rides service: create, find, join and delete rides (SPEC §5). It keeps
// no data of its own; every operation goes to the database as a service, and a ride's user is
// checked with one request to the users service through the load balancer.
package rides

import (
	"context"
	"errors"
	"fmt"
	"github.com/rideshare/rideshare"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

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
const ServiceName = "rides"

// Service serves the rides API. Set the fields, then call Handler.
type Service struct {
	// DB is the database. Required.
	DB DB
	// UsersURL is the base URL through which users are checked: the load balancer (gateway),
	// e.g. http://127.0.0.1:8080. Required.
	UsersURL string
	// Origin is this service's public address, sent as the Origin header of the user check.
	Origin string
	// HTTP makes the user check; nil means a client with a 10 s timeout.
	HTTP *http.Client
	// Location is the time zone timestamps are read in; nil means UTC.
	Location *time.Location
	// Now is the clock that tells upcoming rides from past ones; nil means time.Now.
	Now func() time.Time
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
	// Registry receives the service's metrics and is served on /metrics; nil means a
	// registry of the service's own.
	Registry *prometheus.Registry

	once       sync.Once
	handler    http.Handler
	log        *slog.Logger
	counter    *metrics.RequestCounter
	userChecks *prometheus.CounterVec
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
	if s.HTTP == nil {
		s.HTTP = &http.Client{Timeout: 10 * time.Second, Transport: httpsvc.NewTransport()}
	}
	if s.Location == nil {
		s.Location = time.UTC
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	s.UsersURL = strings.TrimRight(s.UsersURL, "/")
	s.counter = metrics.NewRequestCounter(ServiceName, s.Registry)
	s.userChecks = metrics.Register(s.Registry, prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace,
		Name:      "rides_user_checks_total",
		Help:      "User checks made to the users service, by outcome (exists, missing, error).",
	}, []string{"outcome"}))
	h := func(fn httpsvc.HandlerFunc) http.HandlerFunc { return httpsvc.Handle(s.log, fn) }

	// Ready when the database answers. The users service is not checked: the rides that are
	// already there can be listed, shown and deleted without it.
	r := httpsvc.NewServiceRouter(ServiceName, s.log, s.Registry, s.counter, s.DB, openapi.Rides)
	r.Handle("/api/v1/rides", httpsvc.Methods{
		http.MethodPost: h(s.create),
		http.MethodGet:  h(s.list),
	})
	// The static segment wins over {rideId} for every method, so POST /api/v1/rides/count is
	// a 405, not an attempt to join ride "count".
	r.Handle("/api/v1/rides/count", httpsvc.Methods{http.MethodGet: h(s.countRides)})
	r.Handle("/api/v1/rides/{rideId}", httpsvc.Methods{
		http.MethodGet:    h(s.get),
		http.MethodPost:   h(s.join),
		http.MethodDelete: h(s.delete),
	})
	r.Handle("/api/v1/db/clear", httpsvc.Methods{http.MethodPost: h(s.clear)})
	s.handler = r
}

// errNoUser answers a ride's user that the users service does not know.
var errNoUser = httpsvc.BadRequest("user does not exist")

// checkUser asks the users service, once, whether username exists: GET
// {UsersURL}/api/v1/users/{username} with the Origin header. 200 means yes, 404 no; anything
// else is a 503.
func (s *Service) checkUser(ctx context.Context, username string) error {
	u := s.UsersURL + "/api/v1/users/" + url.PathEscape(username)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("user check: %w", err)
	}
	if s.Origin != "" {
		req.Header.Set("Origin", s.Origin)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		s.userChecks.WithLabelValues("error").Inc()
		s.log.WarnContext(ctx, "user check failed", "err", err)
		return httpsvc.Errorf(http.StatusServiceUnavailable, "users service unavailable, try again shortly")
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)) // let the connection be reused
	switch resp.StatusCode {
	case http.StatusOK:
		s.userChecks.WithLabelValues("exists").Inc()
		return nil
	case http.StatusNotFound:
		s.userChecks.WithLabelValues("missing").Inc()
		return errNoUser
	}
	s.userChecks.WithLabelValues("error").Inc()
	s.log.WarnContext(ctx, "user check failed", "status", resp.StatusCode)
	return httpsvc.Errorf(http.StatusServiceUnavailable,
		"users service unavailable (answered %d), try again shortly", resp.StatusCode)
}

// parseArea checks an area id from a body field or query parameter.
func parseArea(field string, id int64) error {
	if _, ok := AreaName(id); !ok {
		return httpsvc.BadRequest("%s must be an area id from 1 to %d", field, NumAreas())
	}
	return nil
}

// parseRideID reads the {rideId} path parameter: a positive decimal integer.
func parseRideID(r *http.Request) (int64, error) {
	raw, err := httpsvc.PathParam(r, "rideId")
	if err != nil {
		return 0, err
	}
	id, err := httpsvc.ParseInt(raw)
	if err != nil || id < 1 {
		return 0, httpsvc.BadRequest("rideId must be a positive integer")
	}
	return id, nil
}

// create is R1: POST /api/v1/rides {"created_by", "timestamp", "source", "destination"} →
// 201 {} with Location: /api/v1/rides/{rideId}. Every field is checked before the user is.
func (s *Service) create(w http.ResponseWriter, r *http.Request) error {
	body, err := httpsvc.DecodeBody(w, r, "created_by", "timestamp", "source", "destination")
	if err != nil {
		return err
	}
	createdBy, err := body.String("created_by")
	if err != nil {
		return err
	}
	stamp, err := body.String("timestamp")
	if err != nil {
		return err
	}
	source, err := body.Int("source")
	if err != nil {
		return err
	}
	destination, err := body.Int("destination")
	if err != nil {
		return err
	}
	if createdBy == "" {
		return httpsvc.BadRequest("created_by must not be empty")
	}
	t, err := ParseTimestamp(stamp, s.Location)
	if err != nil {
		return httpsvc.BadRequest("%v", err)
	}
	if err := parseArea("source", source); err != nil {
		return err
	}
	if err := parseArea("destination", destination); err != nil {
		return err
	}
	if source == destination {
		return httpsvc.BadRequest("source and destination must differ")
	}
	if err := s.checkUser(r.Context(), createdBy); err != nil {
		return err
	}
	res, err := s.DB.Write(r.Context(), rideshare.Write{Table: "rides", Insert: map[string]any{
		"created_by":  createdBy,
		"timestamp":   t.Format(TimestampLayout),
		"ts":          t.Unix(),
		"source":      source,
		"destination": destination,
	}})
	if errors.Is(err, rideshare.ErrConstraint) {
		// The user was deleted between the check and the insert.
		return errNoUser
	}
	if err != nil {
		return fmt.Errorf("insert ride: %w", err)
	}
	w.Header().Set("Location", "/api/v1/rides/"+strconv.FormatInt(res.ID, 10))
	httpsvc.Empty(w, http.StatusCreated)
	return nil
}

// upcoming is one ride in R2's answer.
type upcoming struct {
	RideID    int64  `json:"rideId"`
	Username  string `json:"username"`
	Timestamp string `json:"timestamp"`
}

// list is R2: GET /api/v1/rides?source=&destination= → the rides between the two areas that
// are strictly after now, earliest first, or 204. Other query parameters are ignored.
func (s *Service) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var ids [2]int64
	for i, name := range []string{"source", "destination"} {
		vs, ok := q[name]
		if !ok {
			return httpsvc.BadRequest("missing query parameter %q", name)
		}
		if len(vs) > 1 {
			return httpsvc.BadRequest("query parameter %q given more than once", name)
		}
		id, err := httpsvc.ParseInt(vs[0])
		if err != nil {
			return httpsvc.BadRequest("query parameter %q %v", name, err)
		}
		if err := parseArea(name, id); err != nil {
			return err
		}
		ids[i] = id
	}
	if ids[0] == ids[1] {
		return httpsvc.BadRequest("source and destination must differ")
	}
	rows, err := s.DB.Read(r.Context(), rideshare.Read{
		Table:   "rides",
		Columns: []string{"ride_id", "created_by", "timestamp"},
		Where: rideshare.Where{
			"source":      ids[0],
			"destination": ids[1],
			"ts":          map[string]any{"gt": s.Now().Unix()},
		},
		Order: []rideshare.Order{{Column: "ts"}, {Column: "ride_id"}},
	})
	if err != nil {
		return fmt.Errorf("list rides: %w", err)
	}
	if len(rows) == 0 {
		httpsvc.NoContent(w)
		return nil
	}
	out := make([]upcoming, len(rows))
	for i, row := range rows {
		var ok [3]bool
		out[i].RideID, ok[0] = row["ride_id"].(int64)
		out[i].Username, ok[1] = row["created_by"].(string)
		out[i].Timestamp, ok[2] = row["timestamp"].(string)
		if ok != [3]bool{true, true, true} {
			return fmt.Errorf("list rides: unexpected row %v", row)
		}
	}
	httpsvc.JSON(w, http.StatusOK, out)
	return nil
}

// ride is R3's answer.
type ride struct {
	RideID      int64    `json:"rideId"`
	CreatedBy   string   `json:"created_by"`
	Users       []string `json:"users"`
	Timestamp   string   `json:"timestamp"`
	Source      int64    `json:"source"`
	Destination int64    `json:"destination"`
}

// readRide reads ride id, or returns nil if there is none.
func (s *Service) readRide(ctx context.Context, id int64) (*ride, error) {
	rows, err := s.DB.Read(ctx, rideshare.Read{
		Table: "rides",
		Where: rideshare.Where{"ride_id": id},
		Limit: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("read ride %d: %w", id, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	row := rows[0]
	rd := &ride{RideID: id, Users: []string{}}
	var ok [4]bool
	rd.CreatedBy, ok[0] = row["created_by"].(string)
	rd.Timestamp, ok[1] = row["timestamp"].(string)
	rd.Source, ok[2] = row["source"].(int64)
	rd.Destination, ok[3] = row["destination"].(int64)
	if ok != [4]bool{true, true, true, true} {
		return nil, fmt.Errorf("read ride %d: unexpected row %v", id, row)
	}
	return rd, nil
}

// riders lists the users who joined ride id, by name.
func (s *Service) riders(ctx context.Context, id int64) ([]string, error) {
	rows, err := s.DB.Read(ctx, rideshare.Read{
		Table:   "ride_users",
		Columns: []string{"username"},
		Where:   rideshare.Where{"ride_id": id},
		Order:   []rideshare.Order{{Column: "username"}},
	})
	if err != nil {
		return nil, fmt.Errorf("read riders of %d: %w", id, err)
	}
	names := make([]string, 0, len(rows))
	for _, row := range rows {
		name, ok := row["username"].(string)
		if !ok {
			return nil, fmt.Errorf("read riders of %d: username is %T", id, row["username"])
		}
		names = append(names, name)
	}
	return names, nil
}

// get is R3: GET /api/v1/rides/{rideId} → the ride with the users who joined it, or 204.
func (s *Service) get(w http.ResponseWriter, r *http.Request) error {
	id, err := parseRideID(r)
	if err != nil {
		return err
	}
	rd, err := s.readRide(r.Context(), id)
	if err != nil {
		return err
	}
	if rd == nil {
		httpsvc.NoContent(w)
		return nil
	}
	if rd.Users, err = s.riders(r.Context(), id); err != nil {
		return err
	}
	httpsvc.JSON(w, http.StatusOK, rd)
	return nil
}

// join is R4: POST /api/v1/rides/{rideId} {"username"} → 200 {}. The user is checked first
// (one users call), then the ride: 204 if there is none, 400 if the user created it or has
// already joined it.
func (s *Service) join(w http.ResponseWriter, r *http.Request) error {
	id, err := parseRideID(r)
	if err != nil {
		return err
	}
	body, err := httpsvc.DecodeBody(w, r, "username")
	if err != nil {
		return err
	}
	username, err := body.String("username")
	if err != nil {
		return err
	}
	if username == "" {
		return httpsvc.BadRequest("username must not be empty")
	}
	if err := s.checkUser(r.Context(), username); err != nil {
		return err
	}
	rd, err := s.readRide(r.Context(), id)
	if err != nil {
		return err
	}
	if rd == nil {
		httpsvc.NoContent(w)
		return nil
	}
	if rd.CreatedBy == username {
		return httpsvc.BadRequest("user created this ride and cannot join it")
	}
	_, err = s.DB.Write(r.Context(), rideshare.Write{Table: "ride_users", Insert: map[string]any{
		"ride_id": id, "username": username,
	}})
	if errors.Is(err, rideshare.ErrConstraint) {
		// Already joined, or the ride or the user went away since they were read.
		return s.whyNotJoined(w, r, id, username)
	}
	if err != nil {
		return fmt.Errorf("join ride %d: %w", id, err)
	}
	httpsvc.Empty(w, http.StatusOK)
	return nil
}

// whyNotJoined tells apart the reasons an insert into ride_users was refused.
func (s *Service) whyNotJoined(w http.ResponseWriter, r *http.Request, id int64, username string) error {
	rd, err := s.readRide(r.Context(), id)
	if err != nil {
		return err
	}
	if rd == nil {
		httpsvc.NoContent(w)
		return nil
	}
	names, err := s.riders(r.Context(), id)
	if err != nil {
		return err
	}
	for _, n := range names {
		if n == username {
			return httpsvc.BadRequest("user already joined this ride")
		}
	}
	return errNoUser
}

// delete is R5: DELETE /api/v1/rides/{rideId} → 200 {}, or 400 if there is no such ride.
func (s *Service) delete(w http.ResponseWriter, r *http.Request) error {
	id, err := parseRideID(r)
	if err != nil {
		return err
	}
	res, err := s.DB.Write(r.Context(), rideshare.Write{
		Table:  "rides",
		Delete: &rideshare.Delete{Where: rideshare.Where{"ride_id": id}},
	})
	if err != nil {
		return fmt.Errorf("delete ride %d: %w", id, err)
	}
	if res.Affected == 0 {
		return httpsvc.BadRequest("no such ride")
	}
	httpsvc.Empty(w, http.StatusOK)
	return nil
}

// countRides is R6: GET /api/v1/rides/count → [n], the rides that exist now.
func (s *Service) countRides(w http.ResponseWriter, r *http.Request) error {
	rows, err := s.DB.Read(r.Context(), rideshare.Read{Table: "rides", Count: true})
	if err != nil {
		return fmt.Errorf("count rides: %w", err)
	}
	if len(rows) != 1 {
		return fmt.Errorf("count rides: %d rows", len(rows))
	}
	n, ok := rows[0]["count"].(int64)
	if !ok {
		return fmt.Errorf("count rides: count is %T", rows[0]["count"])
	}
	httpsvc.JSON(w, http.StatusOK, []int64{n})
	return nil
}

// clear is R7: POST /api/v1/db/clear → 200 {}: every ride goes, and with them every join.
func (s *Service) clear(w http.ResponseWriter, r *http.Request) error {
	_, err := s.DB.Write(r.Context(), rideshare.Write{
		Table:  "rides",
		Delete: &rideshare.Delete{Where: rideshare.Where{}},
	})
	if err != nil {
		return fmt.Errorf("clear rides: %w", err)
	}
	httpsvc.Empty(w, http.StatusOK)
	return nil
}
