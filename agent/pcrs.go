package agent

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/attestation/attestation/agent/tpm"
)

// ParsePCRs parses a PCR list such as "0-7" or "0-7,14": indices and
// ranges separated by commas. The result is sorted without duplicates.
func ParsePCRs(s string) ([]int, error) {
	var pcrs []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := parsePCR(lo)
		if err != nil {
			return nil, fmt.Errorf("PCRs %q: %w", s, err)
		}
		last := first
		if isRange {
			if last, err = parsePCR(hi); err != nil {
				return nil, fmt.Errorf("PCRs %q: %w", s, err)
			}
			if last < first {
				return nil, fmt.Errorf("PCRs %q: range %s is backwards", s, part)
			}
		}
		for p := first; p <= last; p++ {
			pcrs = append(pcrs, p)
		}
	}
	if len(pcrs) == 0 {
		return nil, fmt.Errorf("PCRs %q: none selected", s)
	}
	slices.Sort(pcrs)
	return slices.Compact(pcrs), nil
}

func parsePCR(s string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || p < 0 || p > tpm.MaxPCR {
		return 0, fmt.Errorf("%q is not a PCR index (0-%d)", s, tpm.MaxPCR)
	}
	return p, nil
}

// formatPCRs is the inverse of ParsePCRs, for logs and --help.
func formatPCRs(pcrs []int) string {
	var parts []string
	for i := 0; i < len(pcrs); {
		j := i
		for j+1 < len(pcrs) && pcrs[j+1] == pcrs[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", pcrs[i], pcrs[j]))
		} else {
			parts = append(parts, strconv.Itoa(pcrs[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
