package delivery

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/switchboard-gateway/switchboard/gateway"
)

// LoadSecretsFile reads one or two whsec_ secrets, one a line, from a file only its owner
// can read.
func LoadSecretsFile(path string) ([]Secret, error) {
	if path == "" {
		return nil, gateway.FieldErrorf(gateway.EMissingField, "webhooks.secrets_file", "a webhook needs a secrets file (one whsec_ secret a line)")
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, gateway.WrapError(gateway.EInvalidField, err, "webhook secrets file %s", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, gateway.FieldErrorf(gateway.EInvalidField, "webhooks.secrets_file", "%s is readable by group or others (chmod 600)", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, gateway.WrapError(gateway.EInvalidField, err, "webhook secrets file %s", path)
	}
	var out []Secret
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sec, err := ParseSecret(line)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, sec)
	}
	if len(out) == 0 || len(out) > 2 {
		return nil, gateway.FieldErrorf(gateway.EInvalidField, "webhooks.secrets_file", "%s holds %d secrets: want one, or two while rotating", path, len(out))
	}
	return out, nil
}

// WriteSecretsFile writes secrets, one a line, to path with mode 0600, replacing it atomically.
func WriteSecretsFile(path string, secrets []string) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+base)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.WriteString(strings.Join(secrets, "\n") + "\n"); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
