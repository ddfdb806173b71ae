package tpm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// EventLogPath is where Linux exposes the firmware's TCG boot event log.
const EventLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"

// maxEventLog matches AttestRequest.event_log's limit.
const maxEventLog = 1 << 20

// ReadEventLog returns the raw boot event log at path (EventLogPath when
// empty), or nil and no error when the platform exposes none.
func ReadEventLog(path string) ([]byte, error) {
	if path == "" {
		path = EventLogPath
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read event log: %w", err)
	}
	if len(b) > maxEventLog {
		return nil, fmt.Errorf("read event log: %d bytes, more than the %d the control plane accepts", len(b), maxEventLog)
	}
	return b, nil
}
