package natsq

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// LoadOrCreateToken returns the token kept in path, making one (32 random bytes, hex) on the
// first start of a deployment. It is kept so that a restarted orchestrator takes the workers
// that outlived it (Docker runtime), which still present the old one. The file is the
// owner's alone (0600); one readable by others is refused rather than trusted.
func LoadOrCreateToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		fi, err := os.Stat(path)
		if err != nil {
			return "", err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("NATS token file %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("NATS token file %s is empty", path)
		}
		return tok, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw[:])
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	// Written whole under another name, then renamed: a crash leaves no half token.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nats-token-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(tok + "\n"); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", err
	}
	return tok, nil
}
