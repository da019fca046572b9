package chaos

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Evidence is what a run recorded, as WriteEvidence saves it: every operation of the history
// and every entry of the sync log, so that a violation can be studied after the stack is gone.
type Evidence struct {
	History []Op    `json:"history"`
	Log     []Entry `json:"log"`
}

// WriteEvidence saves h and log as JSON in a new file in dir and returns its path.
func WriteEvidence(dir string, h []Op, log []Entry) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "evidence-*.json")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := f.Chmod(0o644); err != nil {
		return "", err
	}
	if err := json.NewEncoder(f).Encode(Evidence{History: h, Log: log}); err != nil {
		return "", fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return filepath.Clean(f.Name()), f.Close()
}

// ReadEvidence reads a file WriteEvidence wrote.
func ReadEvidence(path string) (Evidence, error) {
	var e Evidence
	b, err := os.ReadFile(path)
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}
