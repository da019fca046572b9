package rides_test

import (
	"fmt"
	"github.com/rideshare/rideshare"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rideshare/rideshare/httpsvc/rides"
)

const errTimestamp = `{"error":"timestamp must be a real date and time as DD-MM-YYYY:SS-MM-HH, e.g. 21-08-2030:00-30-14"}`

func TestCreateRide(t *testing.T) {
	s := mustStack(t)
	s.mustUser(t, "alice")
	future := "21-08-2030:00-00-00"
	tests := []struct {
		name        string
		body        string
		contentType string
		want        answer
		userChecks  int // requests the users service must receive
	}{
		{"created", rideBody("alice", future, 1, 2), "application/json", answer{Code: 201, Body: `{}`, Location: "/api/v1/rides/1"}, 1},
		{"created from decimal strings", rideBody("alice", future, "3", "4"), "", answer{Code: 201, Body: `{}`, Location: "/api/v1/rides/2"}, 1},
		{"created from form fields", "created_by=alice&timestamp=" + future + "&source=198&destination=1", form, answer{Code: 201, Body: `{}`, Location: "/api/v1/rides/3"}, 1},
		{"created in the past", rideBody("alice", "01-01-2000:00-00-00", 1, 2), "", answer{Code: 201, Body: `{}`, Location: "/api/v1/rides/4"}, 1},
		{"user does not exist", rideBody("nobody", future, 1, 2), "", answer{Code: 400, Body: `{"error":"user does not exist"}`}, 1},
		{"user name is case-sensitive", rideBody("Alice", future, 1, 2), "", answer{Code: 400, Body: `{"error":"user does not exist"}`}, 1},
		{"empty creator", rideBody("", future, 1, 2), "", answer{Code: 400, Body: `{"error":"created_by must not be empty"}`}, 0},
		{"31 February", rideBody("alice", "31-02-2030:00-00-00", 1, 2), "", answer{Code: 400, Body: errTimestamp}, 0},
		{"hour 24", rideBody("alice", "21-08-2030:00-00-24", 1, 2), "", answer{Code: 400, Body: errTimestamp}, 0},
		{"short day", rideBody("alice", "1-08-2030:00-00-00", 1, 2), "", answer{Code: 400, Body: errTimestamp}, 0},
		{"ISO timestamp", rideBody("alice", "2030-08-21T00:00:00Z", 1, 2), "", answer{Code: 400, Body: errTimestamp}, 0},
		{"timestamp not a string", `{"created_by":"alice","timestamp":1,"source":1,"destination":2}`, "", answer{Code: 400, Body: `{"error":"field \"timestamp\" must be a string, not a number"}`}, 0},
		{"area 0", rideBody("alice", future, 0, 2), "", answer{Code: 400, Body: `{"error":"source must be an area id from 1 to 198"}`}, 0},
		{"area 199", rideBody("alice", future, 1, 199), "", answer{Code: 400, Body: `{"error":"destination must be an area id from 1 to 198"}`}, 0},
		{"negative area", rideBody("alice", future, -1, 2), "", answer{Code: 400, Body: `{"error":"source must be an area id from 1 to 198"}`}, 0},
		{"fractional area", `{"created_by":"alice","timestamp":"` + future + `","source":2.5,"destination":2}`, "", answer{Code: 400, Body: `{"error":"field \"source\" must be an integer (2 or \"2\")"}`}, 0},
		{"area letters", rideBody("alice", future, "abc", 2), "", answer{Code: 400, Body: `{"error":"field \"source\" must be an integer (2 or \"2\")"}`}, 0},
		{"area empty string", rideBody("alice", future, 1, ""), "", answer{Code: 400, Body: `{"error":"field \"destination\" must be an integer (2 or \"2\")"}`}, 0},
		{"area null", rideBody("alice", future, nil, 2), "", answer{Code: 400, Body: `{"error":"field \"source\" must be an integer (2 or \"2\"), not null"}`}, 0},
		{"source equals destination", rideBody("alice", future, 7, "7"), "", answer{Code: 400, Body: `{"error":"source and destination must differ"}`}, 0},
		{"missing field", `{"created_by":"alice","timestamp":"` + future + `","source":1}`, "", answer{Code: 400, Body: `{"error":"missing field \"destination\""}`}, 0},
		{"unknown field", `{"created_by":"alice","timestamp":"` + future + `","source":1,"destination":2,"seats":4}`, "", answer{Code: 400, Body: `{"error":"unknown field \"seats\" (expected \"created_by\", \"timestamp\", \"source\", \"destination\")"}`}, 0},
		{"malformed JSON", `{"created_by":"alice",`, "", answer{Code: 400, Body: `{"error":"malformed JSON: unexpected end of the body"}`}, 0},
		{"trailing garbage", rideBody("alice", future, 1, 2) + ` {}`, "", answer{Code: 400, Body: `{"error":"unexpected data after the JSON object"}`}, 0},
		{"form missing field", "created_by=alice&timestamp=" + future + "&source=1", form, answer{Code: 400, Body: `{"error":"missing field \"destination\""}`}, 0},
		{"oversized body", rideBody(strings.Repeat("a", 70000), future, 1, 2), "", answer{Code: 413, Body: `{"error":"request body larger than 65536 bytes"}`}, 0},
	}
	for _, tt := range tests { // in order: the Location ids count up
		t.Run(tt.name, func(t *testing.T) {
			before := s.userChecks()
			check(t, s.do(t, "POST", "/api/v1/rides", tt.body, tt.contentType), tt.want)
			if got := s.userChecks() - before; got != tt.userChecks {
				t.Fatalf("%d user checks, want %d", got, tt.userChecks)
			}
		})
	}
	t.Run("user checks carry the rides service's Origin", func(t *testing.T) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, o := range s.origins {
			if o != origin {
				t.Fatalf("Origin %q, want %q", o, origin)
			}
		}
	})
	t.Run("stored as given", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/3", "", ""), answer{Code: 200,
			Body: `{"rideId":3,"created_by":"alice","users":[],"timestamp":"21-08-2030:00-00-00","source":198,"destination":1}`})
	})
}

func TestRidesMethodNotAllowed(t *testing.T) {
	s := mustStack(t)
	s.mustUser(t, "alice")
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2)
	tests := []struct{ method, path, allow string }{
		{"PUT", "/api/v1/rides", "GET, POST"},
		{"DELETE", "/api/v1/rides", "GET, POST"},
		{"PATCH", "/api/v1/rides", "GET, POST"},
		{"PUT", "/api/v1/rides/1", "DELETE, GET, POST"},
		{"PATCH", "/api/v1/rides/1", "DELETE, GET, POST"},
		{"POST", "/api/v1/rides/count", "GET"},
		{"DELETE", "/api/v1/rides/count", "GET"},
		{"PUT", "/api/v1/rides/count", "GET"},
		{"PROPFIND", "/api/v1/rides", "GET, POST"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path+" is 405", func(t *testing.T) {
			want := answer{Code: 405, Body: `{"error":"method ` + tt.method + ` not allowed here; allowed: ` + tt.allow + `"}`, Allow: tt.allow}
			check(t, s.do(t, tt.method, tt.path, "", ""), want)
		})
	}
	for _, tt := range []struct{ method, path, allow string }{
		{"GET", "/api/v1/db/clear", "POST"},
		{"PUT", "/api/v1/_count", "DELETE, GET"},
	} {
		t.Run(tt.method+" "+tt.path+" on the rides service is 405", func(t *testing.T) {
			want := answer{Code: 405, Body: `{"error":"method ` + tt.method + ` not allowed here; allowed: ` + tt.allow + `"}`, Allow: tt.allow}
			check(t, do(t, tt.method, s.rides+tt.path, "", ""), want)
		})
	}
	t.Run("ride intact", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/count", "", ""), answer{Code: 200, Body: `[1]`})
	})
}

func TestListUpcomingRides(t *testing.T) {
	s := mustStack(t)
	s.mustUser(t, "alice")
	s.mustUser(t, "bob")
	later := s.mustRide(t, "alice", "01-07-2025:00-00-09", 1, 2) // 1
	s.mustRide(t, "bob", "01-06-2025:00-00-12", 1, 2)            // 2: exactly now, not upcoming
	s.mustRide(t, "bob", "01-05-2025:00-00-09", 1, 2)            // 3: past
	soon := s.mustRide(t, "bob", "01-06-2025:01-00-12", 1, 2)    // 4: a second after now
	tie := s.mustRide(t, "alice", "01-07-2025:00-00-09", 1, 2)   // 5: same time as 1
	s.mustRide(t, "alice", "01-07-2025:00-00-09", 2, 1)          // 6: other direction
	s.mustRide(t, "alice", "01-07-2025:00-00-09", 1, 3)          // 7: other destination
	if later != "/api/v1/rides/1" || soon != "/api/v1/rides/4" || tie != "/api/v1/rides/5" {
		t.Fatalf("unexpected ids %s %s %s", later, soon, tie)
	}
	upcoming := `[{"rideId":4,"username":"bob","timestamp":"01-06-2025:01-00-12"},` +
		`{"rideId":1,"username":"alice","timestamp":"01-07-2025:00-00-09"},` +
		`{"rideId":5,"username":"alice","timestamp":"01-07-2025:00-00-09"}]`
	tests := []struct {
		name  string
		query string
		want  answer
	}{
		{"upcoming only, earliest first, ties by id", "?source=1&destination=2", answer{Code: 200, Body: upcoming}},
		{"other direction", "?destination=1&source=2", answer{Code: 200, Body: `[{"rideId":6,"username":"alice","timestamp":"01-07-2025:00-00-09"}]`}},
		{"leading zeros", "?source=001&destination=03", answer{Code: 200, Body: `[{"rideId":7,"username":"alice","timestamp":"01-07-2025:00-00-09"}]`}},
		{"unknown parameters ignored", "?source=2&destination=1&_=123", answer{Code: 200, Body: `[{"rideId":6,"username":"alice","timestamp":"01-07-2025:00-00-09"}]`}},
		{"none is 204", "?source=5&destination=6", answer{Code: 204}},
		{"only past rides is 204", "?source=3&destination=1", answer{Code: 204}},
		{"missing source", "?destination=2", answer{Code: 400, Body: `{"error":"missing query parameter \"source\""}`}},
		{"missing destination", "?source=1", answer{Code: 400, Body: `{"error":"missing query parameter \"destination\""}`}},
		{"no query", "", answer{Code: 400, Body: `{"error":"missing query parameter \"source\""}`}},
		{"empty source", "?source=&destination=2", answer{Code: 400, Body: `{"error":"query parameter \"source\" must be an integer (2 or \"2\")"}`}},
		{"letters", "?source=1&destination=abc", answer{Code: 400, Body: `{"error":"query parameter \"destination\" must be an integer (2 or \"2\")"}`}},
		{"fraction", "?source=1.5&destination=2", answer{Code: 400, Body: `{"error":"query parameter \"source\" must be an integer (2 or \"2\")"}`}},
		{"area 0", "?source=0&destination=2", answer{Code: 400, Body: `{"error":"source must be an area id from 1 to 198"}`}},
		{"area 199", "?source=1&destination=199", answer{Code: 400, Body: `{"error":"destination must be an area id from 1 to 198"}`}},
		{"same area", "?source=4&destination=4", answer{Code: 400, Body: `{"error":"source and destination must differ"}`}},
		{"repeated", "?source=1&source=2&destination=3", answer{Code: 400, Body: `{"error":"query parameter \"source\" given more than once"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, s.do(t, "GET", "/api/v1/rides"+tt.query, "", ""), tt.want)
		})
	}
}

func TestGetRide(t *testing.T) {
	s := mustStack(t)
	for _, u := range []string{"alice", "carol", "bob"} {
		s.mustUser(t, u)
	}
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2)
	s.mustRide(t, "alice", "22-08-2030:30-15-09", 10, 20)
	check(t, s.do(t, "POST", "/api/v1/rides/1", `{"username":"carol"}`, ""), answer{Code: 200, Body: `{}`})
	check(t, s.do(t, "POST", "/api/v1/rides/1", `{"username":"bob"}`, ""), answer{Code: 200, Body: `{}`})
	tests := []struct {
		name string
		id   string
		want answer
	}{
		{"with riders by name", "1", answer{Code: 200, Body: `{"rideId":1,"created_by":"alice","users":["bob","carol"],"timestamp":"21-08-2030:00-00-00","source":1,"destination":2}`}},
		{"without riders", "2", answer{Code: 200, Body: `{"rideId":2,"created_by":"alice","users":[],"timestamp":"22-08-2030:30-15-09","source":10,"destination":20}`}},
		{"leading zero", "02", answer{Code: 200, Body: `{"rideId":2,"created_by":"alice","users":[],"timestamp":"22-08-2030:30-15-09","source":10,"destination":20}`}},
		{"no such ride is 204", "3", answer{Code: 204}},
		{"zero", "0", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}},
		{"negative", "-1", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}},
		{"letters", "abc", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}},
		{"fraction", "1.5", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}},
		{"plus sign", "+1", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}},
		{"too large", "99999999999999999999", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, s.do(t, "GET", "/api/v1/rides/"+tt.id, "", ""), tt.want)
		})
	}
}

func TestJoinRide(t *testing.T) {
	s := mustStack(t)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		s.mustUser(t, u)
	}
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2)
	tests := []struct {
		name        string
		id          string
		body        string
		contentType string
		want        answer
		userChecks  int
	}{
		{"joined", "1", `{"username":"bob"}`, "", answer{Code: 200, Body: `{}`}, 1},
		{"joined from a form", "1", "username=carol", form, answer{Code: 200, Body: `{}`}, 1},
		{"already in the ride", "1", `{"username":"bob"}`, "", answer{Code: 400, Body: `{"error":"user already joined this ride"}`}, 1},
		{"creator cannot join", "1", `{"username":"alice"}`, "", answer{Code: 400, Body: `{"error":"user created this ride and cannot join it"}`}, 1},
		{"user does not exist", "1", `{"username":"nobody"}`, "", answer{Code: 400, Body: `{"error":"user does not exist"}`}, 1},
		{"no such ride is 204", "9", `{"username":"dave"}`, "", answer{Code: 204}, 1},
		{"no such ride nor user is 400", "9", `{"username":"nobody"}`, "", answer{Code: 400, Body: `{"error":"user does not exist"}`}, 1},
		{"bad rideId", "x", `{"username":"dave"}`, "", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}, 0},
		{"zero rideId", "0", `{"username":"dave"}`, "", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}, 0},
		{"empty username", "1", `{"username":""}`, "", answer{Code: 400, Body: `{"error":"username must not be empty"}`}, 0},
		{"username not a string", "1", `{"username":["dave"]}`, "", answer{Code: 400, Body: `{"error":"field \"username\" must be a string, not an array"}`}, 0},
		{"missing username", "1", `{}`, "", answer{Code: 400, Body: `{"error":"missing field \"username\""}`}, 0},
		{"unknown field", "1", `{"username":"dave","seat":2}`, "", answer{Code: 400, Body: `{"error":"unknown field \"seat\" (expected \"username\")"}`}, 0},
		{"empty body", "1", ``, "", answer{Code: 400, Body: `{"error":"empty body: expected a JSON object"}`}, 0},
		{"trailing garbage", "1", `{"username":"dave"}]`, "", answer{Code: 400, Body: `{"error":"unexpected data after the JSON object"}`}, 0},
		{"oversized body", "1", `{"username":"` + strings.Repeat("d", 1<<17) + `"}`, "", answer{Code: 413, Body: `{"error":"request body larger than 65536 bytes"}`}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.userChecks()
			check(t, s.do(t, "POST", "/api/v1/rides/"+tt.id, tt.body, tt.contentType), tt.want)
			if got := s.userChecks() - before; got != tt.userChecks {
				t.Fatalf("%d user checks, want %d", got, tt.userChecks)
			}
		})
	}
	t.Run("riders recorded", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/1", "", ""), answer{Code: 200,
			Body: `{"rideId":1,"created_by":"alice","users":["bob","carol"],"timestamp":"21-08-2030:00-00-00","source":1,"destination":2}`})
	})
}

func TestConcurrentChangesBetweenCheckAndWrite(t *testing.T) {
	s := mustStack(t)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		s.mustUser(t, u)
	}
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2) // 1
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2) // 2
	check(t, s.do(t, "POST", "/api/v1/rides/2", `{"username":"dave"}`, ""), answer{Code: 200, Body: `{}`})
	// deleteOnce runs a delete through the users or rides API before the handler's own write.
	// The delete may itself pass through the hook: only the first call acts.
	deleteOnce := func(t *testing.T, base, path string) func(rideshare.Write) {
		var done atomic.Bool
		return func(rideshare.Write) {
			if !done.CompareAndSwap(false, true) {
				return
			}
			if got := do(t, "DELETE", base+path, "", ""); got.Code != 200 {
				t.Errorf("concurrent delete %s: %+v", path, got)
			}
		}
	}
	tests := []struct {
		name   string
		hook   func(t *testing.T) func(rideshare.Write)
		method string
		path   string
		body   string
		want   answer
	}{
		{"ride deleted before the join is 204",
			func(t *testing.T) func(rideshare.Write) { return deleteOnce(t, s.rides, "/api/v1/rides/1") },
			"POST", "/api/v1/rides/1", `{"username":"bob"}`, answer{Code: 204}},
		{"joiner deleted before the join is 400",
			func(t *testing.T) func(rideshare.Write) { return deleteOnce(t, s.users, "/api/v1/users/bob") },
			"POST", "/api/v1/rides/2", `{"username":"bob"}`, answer{Code: 400, Body: `{"error":"user does not exist"}`}},
		{"creator deleted before the insert is 400",
			func(t *testing.T) func(rideshare.Write) { return deleteOnce(t, s.users, "/api/v1/users/carol") },
			"POST", "/api/v1/rides", rideBody("carol", "21-08-2030:00-00-00", 1, 2), answer{Code: 400, Body: `{"error":"user does not exist"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.setHook(tt.hook(t))
			defer s.setHook(nil)
			check(t, s.do(t, tt.method, tt.path, tt.body, ""), tt.want)
		})
	}
}

func TestDeleteRide(t *testing.T) {
	s := mustStack(t)
	s.mustUser(t, "alice")
	s.mustUser(t, "bob")
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2)
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2)
	check(t, s.do(t, "POST", "/api/v1/rides/1", `{"username":"bob"}`, ""), answer{Code: 200, Body: `{}`})
	tests := []struct {
		name string
		id   string
		want answer
	}{
		{"deleted", "1", answer{Code: 200, Body: `{}`}},
		{"second delete is 400", "1", answer{Code: 400, Body: `{"error":"no such ride"}`}},
		{"never existed is 400", "77", answer{Code: 400, Body: `{"error":"no such ride"}`}},
		{"bad rideId", "one", answer{Code: 400, Body: `{"error":"rideId must be a positive integer"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, s.do(t, "DELETE", "/api/v1/rides/"+tt.id, "", ""), tt.want)
		})
	}
	t.Run("gone with its joins", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/1", "", ""), answer{Code: 204})
		check(t, s.do(t, "POST", "/api/v1/rides/1", `{"username":"bob"}`, ""), answer{Code: 204})
		check(t, s.do(t, "GET", "/api/v1/rides/count", "", ""), answer{Code: 200, Body: `[1]`})
	})
	t.Run("ids never reused", func(t *testing.T) {
		check(t, s.do(t, "DELETE", "/api/v1/rides/2", "", ""), answer{Code: 200, Body: `{}`})
		if loc := s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2); loc != "/api/v1/rides/3" {
			t.Fatalf("new ride at %s, want /api/v1/rides/3", loc)
		}
	})
}

func TestCountRides(t *testing.T) {
	s := mustStack(t)
	t.Run("zero", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/count", "", ""), answer{Code: 200, Body: `[0]`})
	})
	s.mustUser(t, "alice")
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2)
	s.mustRide(t, "alice", "01-01-2001:00-00-00", 1, 2) // past rides exist too
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 5, 2)
	check(t, s.do(t, "DELETE", "/api/v1/rides/3", "", ""), answer{Code: 200, Body: `{}`})
	t.Run("rides that exist now", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/count", "", ""), answer{Code: 200, Body: `[2]`})
	})
}

func TestClearRides(t *testing.T) {
	s := mustStack(t)
	s.mustUser(t, "alice")
	s.mustUser(t, "bob")
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2)
	check(t, s.do(t, "POST", "/api/v1/rides/1", `{"username":"bob"}`, ""), answer{Code: 200, Body: `{}`})
	check(t, do(t, "POST", s.rides+"/api/v1/db/clear", "", ""), answer{Code: 200, Body: `{}`})
	t.Run("no rides left", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/count", "", ""), answer{Code: 200, Body: `[0]`})
		check(t, s.do(t, "GET", "/api/v1/rides/1", "", ""), answer{Code: 204})
	})
	t.Run("users stay", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 200, Body: `["alice","bob"]`})
	})
	t.Run("ids not reused after a clear", func(t *testing.T) {
		if loc := s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2); loc != "/api/v1/rides/2" {
			t.Fatalf("new ride at %s", loc)
		}
	})
	t.Run("clearing users clears their rides", func(t *testing.T) {
		check(t, do(t, "POST", s.users+"/api/v1/db/clear", "", ""), answer{Code: 200, Body: `{}`})
		check(t, s.do(t, "GET", "/api/v1/rides/count", "", ""), answer{Code: 200, Body: `[0]`})
	})
}

func TestDeletingAUserRemovesTheirRidesAndJoins(t *testing.T) {
	s := mustStack(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		s.mustUser(t, u)
	}
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2) // 1, by alice
	s.mustRide(t, "bob", "21-08-2030:00-00-00", 1, 2)   // 2, by bob, joined by alice and carol
	for _, u := range []string{"alice", "carol"} {
		check(t, s.do(t, "POST", "/api/v1/rides/2", `{"username":"`+u+`"}`, ""), answer{Code: 200, Body: `{}`})
	}
	check(t, s.do(t, "POST", "/api/v1/rides/1", `{"username":"carol"}`, ""), answer{Code: 200, Body: `{}`})
	check(t, s.do(t, "DELETE", "/api/v1/users/alice", "", ""), answer{Code: 200, Body: `{}`})
	t.Run("their ride is gone", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/1", "", ""), answer{Code: 204})
	})
	t.Run("their join is gone", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/2", "", ""), answer{Code: 200,
			Body: `{"rideId":2,"created_by":"bob","users":["carol"],"timestamp":"21-08-2030:00-00-00","source":1,"destination":2}`})
	})
	t.Run("others' rides stay", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/rides/count", "", ""), answer{Code: 200, Body: `[1]`})
	})
	t.Run("deleted user cannot create a ride", func(t *testing.T) {
		check(t, s.do(t, "POST", "/api/v1/rides", rideBody("alice", "21-08-2030:00-00-00", 1, 2), ""),
			answer{Code: 400, Body: `{"error":"user does not exist"}`})
	})
}

func TestInjectionLookingNamesArePlainData(t *testing.T) {
	s := mustStack(t)
	evil := "'; DROP TABLE users;--"
	s.mustUser(t, "alice")
	s.mustUser(t, evil)
	s.mustUser(t, "a/b?c")
	loc := s.mustRide(t, evil, "21-08-2030:00-00-00", 1, 2)
	check(t, s.do(t, "POST", loc, `{"username":"a/b?c"}`, ""), answer{Code: 200, Body: `{}`})
	check(t, s.do(t, "POST", loc, `{"username":"alice"}`, ""), answer{Code: 200, Body: `{}`})
	t.Run("ride kept the names", func(t *testing.T) {
		check(t, s.do(t, "GET", loc, "", ""), answer{Code: 200,
			Body: `{"rideId":1,"created_by":` + quote(evil) + `,"users":["a/b?c","alice"],"timestamp":"21-08-2030:00-00-00","source":1,"destination":2}`})
	})
	t.Run("every user intact", func(t *testing.T) {
		check(t, s.do(t, "GET", "/api/v1/users", "", ""), answer{Code: 200, Body: `["alice",` + quote(evil) + `,"a/b?c"]`})
	})
	t.Run("lookup by the name", func(t *testing.T) {
		check(t, s.do(t, "GET", userPath(evil), "", ""), answer{Code: 200, Body: `{"username":` + quote(evil) + `}`})
	})
}

func TestCountArithmetic(t *testing.T) {
	s := mustStack(t)
	s.mustUser(t, "seed") // before the reset: not counted
	s.resetCounts(t)

	const n, m = 3, 2
	for i := range n {
		s.mustUser(t, fmt.Sprintf("user%d", i))
	}
	for i := range m {
		s.mustRide(t, "user0", "21-08-2030:00-00-00", i+1, 100)
	}
	usersRejected := []answer{
		s.do(t, "POST", "/api/v1/users", "", ""),                                        // 405
		s.do(t, "PUT", "/api/v1/users", `{"username":"x"}`, ""),                         // 400
		s.do(t, "GET", "/api/v1/users/nobody", "", ""),                                  // 404
		do(t, "GET", s.users+"/api/v1/no/such/path", "", ""),                            // 404, unrouted
		s.do(t, "DELETE", "/api/v1/users/nobody", "", ""),                               // 400
		s.do(t, "PUT", "/api/v1/users", `{"username":"user1","password":"`+pw+`"}`, ""), // 400 taken
	}
	ridesRejected := []answer{
		s.do(t, "POST", "/api/v1/rides", `{"created_by":"user0"`, ""), // 400 malformed: no user check
		s.do(t, "PUT", "/api/v1/rides", "", ""),                       // 405
		s.do(t, "GET", "/api/v1/rides/0", "", ""),                     // 400
		s.do(t, "GET", "/api/v1/rides?source=1", "", ""),              // 400
		s.do(t, "POST", "/api/v1/rides/count", "", ""),                // 405
	}
	for _, a := range append(usersRejected, ridesRejected...) {
		if a.Code < 400 {
			t.Fatalf("a rejected request succeeded: %+v", a)
		}
	}
	// Requests that are not counted.
	do(t, "GET", s.users+"/api/v1/_count", "", "")
	do(t, "GET", s.rides+"/api/v1/_count", "", "")
	do(t, "GET", s.rides+"/api/v1/db/clear", "", "") // 405, still not counted
	do(t, "GET", s.users+"/metrics", "", "")
	do(t, "GET", s.gw+"/healthz", "", "")
	do(t, "GET", s.gw+"/readyz", "", "") // checks the upstreams' /healthz only

	t.Run("users count creations, user checks and rejections", func(t *testing.T) {
		want := fmt.Sprintf("[%d]", n+m+len(usersRejected))
		if got := s.count(t, s.users); got != want {
			t.Fatalf("users _count = %s, want %s", got, want)
		}
	})
	t.Run("rides count creations and rejections", func(t *testing.T) {
		want := fmt.Sprintf("[%d]", m+len(ridesRejected))
		if got := s.count(t, s.rides); got != want {
			t.Fatalf("rides _count = %s, want %s", got, want)
		}
	})
	t.Run("a ride creation adds exactly one to users", func(t *testing.T) {
		s.resetCounts(t)
		s.mustRide(t, "user1", "21-08-2030:00-00-00", 1, 2)
		if got := s.count(t, s.users); got != "[1]" {
			t.Fatalf("users _count = %s, want [1]", got)
		}
	})
	t.Run("a malformed ride makes no users call", func(t *testing.T) {
		s.resetCounts(t)
		for _, body := range []string{`{`, `{"created_by":"user1"}`, rideBody("user1", "31-02-2030:00-00-00", 1, 2), rideBody("user1", "21-08-2030:00-00-00", 1, 1)} {
			if got := s.do(t, "POST", "/api/v1/rides", body, ""); got.Code != 400 {
				t.Fatalf("%s: %+v", body, got)
			}
		}
		if got := s.count(t, s.users); got != "[0]" {
			t.Fatalf("users _count = %s, want [0]", got)
		}
	})
}

func TestUserCheckFailureIs503(t *testing.T) {
	tests := []struct {
		name     string
		usersURL func(tb testing.TB) string
		want     answer
	}{
		{"users service answers 500", func(tb testing.TB) string { return fakeUsers(tb, 500) }, answer{Code: 503, Body: `{"error":"users service unavailable (answered 500), try again shortly"}`}},
		{"gateway answers 502", func(tb testing.TB) string { return fakeUsers(tb, 502) }, answer{Code: 503, Body: `{"error":"users service unavailable (answered 502), try again shortly"}`}},
		{"users service unreachable", deadURL, answer{Code: 503, Body: `{"error":"users service unavailable, try again shortly"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &rides.Service{DB: mustLocal(t), UsersURL: tt.usersURL(t), Registry: prometheus.NewRegistry(), Logger: discard}
			srv := serve(t, svc)
			check(t, do(t, "POST", srv+"/api/v1/rides", rideBody("alice", "21-08-2030:00-00-00", 1, 2), ""), tt.want)
			check(t, do(t, "POST", srv+"/api/v1/rides/1", `{"username":"alice"}`, ""), tt.want)
		})
	}
}

func TestOperationalEndpoints(t *testing.T) {
	s := mustStack(t)
	s.mustUser(t, "alice")
	s.mustRide(t, "alice", "21-08-2030:00-00-00", 1, 2)
	s.do(t, "GET", "/api/v1/rides/5", "", "")
	t.Run("healthz", func(t *testing.T) {
		check(t, do(t, "GET", s.rides+"/healthz", "", ""), answer{Code: 200, Body: `{"status":"ok"}`})
	})
	t.Run("readyz", func(t *testing.T) {
		check(t, do(t, "GET", s.rides+"/readyz", "", ""), answer{Code: 200, Body: `{"status":"ok"}`})
	})
	t.Run("metrics by route pattern", func(t *testing.T) {
		body := do(t, "GET", s.rides+"/metrics", "", "").Body
		for _, want := range []string{
			`rideshare_http_requests_total{code="201",method="POST",route="/api/v1/rides",service="rides"} 1`,
			`rideshare_http_requests_total{code="204",method="GET",route="/api/v1/rides/{rideId}",service="rides"} 1`,
			`rideshare_rides_user_checks_total{outcome="exists"} 1`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
	t.Run("readyz with the database down", func(t *testing.T) {
		s.db.Store.Close()
		got := do(t, "GET", s.rides+"/readyz", "", "")
		if got.Code != 503 || !strings.HasPrefix(got.Body, `{"error":"not ready: database: `) {
			t.Fatalf("got %+v", got)
		}
	})
}
