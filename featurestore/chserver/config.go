package chserver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Layout of a server directory.
const (
	configFile     = "config.xml"
	usersFile      = "users.xml"
	logDir         = "log"
	errLogFile     = "server.err.log"
	stdoutLogFile  = "stdout.log"
	userFilesDir   = "user_files"
	instanceIDFile = "tailor-instance-id" // in user_files; see probe
)

// writeConfig lays out dir for a server on the given ports and writes a
// fresh instance id, which probe reads back through the server to make sure
// the process answering on the port is the one using dir.
func writeConfig(dir string, tcpPort, httpPort int) (instanceID string, err error) {
	for _, sub := range []string{logDir, "data", "tmp", userFilesDir, "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return "", fmt.Errorf("chserver: create %s: %w", sub, err)
		}
	}
	p := func(sub string) string { return xmlText(filepath.Join(dir, sub) + "/") }
	config := `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>` + xmlText(filepath.Join(dir, logDir, "server.log")) + `</log><errorlog>` + xmlText(filepath.Join(dir, logDir, errLogFile)) + `</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>` + strconv.Itoa(httpPort) + `</http_port>
  <tcp_port>` + strconv.Itoa(tcpPort) + `</tcp_port>
  <path>` + p("data") + `</path>
  <tmp_path>` + p("tmp") + `</tmp_path>
  <user_files_path>` + p(userFilesDir) + `</user_files_path>
  <format_schema_path>` + p("format_schemas") + `</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <timezone>UTC</timezone>
  <users_config>` + usersFile + `</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mlock_executable>false</mlock_executable>
</yandex>
`
	const users = `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>10000000000</max_memory_usage><poll_interval>1</poll_interval></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("chserver: instance id: %w", err)
	}
	instanceID = hex.EncodeToString(raw[:])
	files := []struct{ name, body string }{
		{filepath.Join(dir, configFile), config},
		{filepath.Join(dir, usersFile), users},
		{filepath.Join(dir, userFilesDir, instanceIDFile), instanceID + "\n"},
	}
	for _, f := range files {
		if err := writeFileAtomic(f.name, []byte(f.body)); err != nil {
			return "", fmt.Errorf("chserver: %w", err)
		}
	}
	return instanceID, nil
}

// readInstanceID returns the instance id last written into dir ("" if none).
func readInstanceID(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, userFilesDir, instanceIDFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// xmlText escapes s for use as XML character data.
func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

// writeFileAtomic writes data to a temporary file beside name and renames it
// over name, so readers never see a half-written file.
func writeFileAtomic(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}
