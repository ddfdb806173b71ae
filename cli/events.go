package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/structpb"

	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

// eventTypes are the event types, for completion.
var eventTypes = []string{
	"node.registered", "node.online", "node.provisioned", "node.configured",
	"node.image_created", "node.role_changed", "node.heartbeat_missed",
	"node.cert_renewed", "node.decommissioned",
}

func eventsCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "events",
		Args:    cobra.ArbitraryArgs,
		RunE:    groupRun,
		Aliases: []string{"event"},
		Short:   "Read or follow the lifecycle event log",
		Long: `Every change of a machine's state writes an event (node.registered,
node.online, node.provisioned, node.decommissioned, ...) in the same
transaction, numbered in commit order (SEQ). An event an operator's action
wrote names the operator (ACTOR); an agent's or the daemon's own has none.
List the log, or watch it live.`,
		Example: `  attestation events list --machine 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a
  attestation events watch`,
	}
	cmd.AddCommand(eventsListCommand(env), eventsWatchCommand(env))
	return cmd
}

func eventsListCommand(env *Env) *cobra.Command {
	var (
		req   attestationv1.ListEventsRequest
		limit int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List events, oldest first",
		Long: `List events in commit order, optionally only one machine's or one type's,
only those after a sequence number, or at most --limit of them.`,
		Example: `  attestation events list
  attestation events list --machine 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a --type node.decommissioned
  attestation events list --since 120 --limit 20 -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usageErrorf("--limit %d: want a positive number, or 0 for all events", limit)
			}
			client := env.Events()
			var all []*attestationv1.Event
			for {
				req.PageSize = 1000
				if limit > 0 && limit-len(all) < 1000 {
					req.PageSize = int32(limit - len(all))
				}
				resp, err := client.ListEvents(cmd.Context(), connect.NewRequest(&req))
				if err != nil {
					return fmt.Errorf("list events: %w", err)
				}
				all = append(all, resp.Msg.Events...)
				if resp.Msg.NextAfterSeq == 0 || (limit > 0 && len(all) >= limit) {
					break
				}
				req.AfterSeq = resp.Msg.NextAfterSeq
			}
			return env.printList(messages(all), len(all), "events", func(w io.Writer) error { return eventTable(w, all) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Machine, "machine", "", "only events of the machine with this ID")
	f.StringVar(&req.Type, "type", "", "only events of this type, like node.registered")
	f.Int64Var(&req.AfterSeq, "since", 0, "only events after this sequence number")
	f.IntVar(&limit, "limit", 0, "at most this many events (0: all)")
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(eventTypes, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("machine", completeMachineIDs(env))
	return cmd
}

func eventsWatchCommand(env *Env) *cobra.Command {
	var (
		req   attestationv1.WatchEventsRequest
		since int64
	)
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Print events as they happen",
		Long: `Print each event as it is committed, one line per event in table form, one
JSON object per line with -o json, or one YAML document per event with
-o yaml, until interrupted (Ctrl-C).

By default only events committed from now on are printed; --since SEQ first
replays the events after SEQ (--since 0: the whole log).

When the stream is lost (the daemon restarts, the network drops), watch
says so on stderr and reconnects by itself, with a growing pause between
attempts (up to 30s), resuming after the last event it printed: nothing is
missed and nothing is printed twice.`,
		Example: `  attestation events watch
  attestation events watch --machine 0b7e4a3c-5c1e-4d8e-9f3a-2b1c0d9e8f7a
  attestation events watch --since 0 -o json | jq .type`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("since") {
				if since < 0 {
					return usageErrorf("--since %d: want a sequence number, 0 or more", since)
				}
				req.AfterSeq = &since
			}
			return env.watchEvents(cmd, &req)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Machine, "machine", "", "only events of the machine with this ID")
	f.Int64Var(&since, "since", 0, "first replay the events after this sequence number")
	_ = cmd.RegisterFlagCompletionFunc("machine", completeMachineIDs(env))
	return cmd
}

// watchStartHeader is the response header of WatchEvents that says the
// sequence number a watch starts after.
const watchStartHeader = "Attestation-Watch-After-Seq"

// Pauses between reconnection attempts of events watch.
const (
	watchRetryFirst = 500 * time.Millisecond
	watchRetryMax   = 30 * time.Second
)

// watchEvents prints the events of req's watch until ctx ends. A stream
// that fails to open the first time is an error (a wrong --url or token);
// once one was established, a lost stream is reopened after the last event
// printed, with backoff, until an error says retrying cannot help.
func (e *Env) watchEvents(cmd *cobra.Command, req *attestationv1.WatchEventsRequest) error {
	ctx := cmd.Context()
	established := false
	pause := watchRetryFirst
	for {
		stream, err := e.Events().WatchEvents(ctx, connect.NewRequest(req))
		if err == nil {
			// The daemon sends its headers as soon as the watch is in
			// place, saying where it starts.
			if seq, perr := strconv.ParseInt(stream.ResponseHeader().Get(watchStartHeader), 10, 64); perr == nil {
				if established {
					fmt.Fprintln(e.Stderr, "attestation: reconnected to the event stream")
				}
				established, pause = true, watchRetryFirst
				if req.AfterSeq == nil {
					req.AfterSeq = &seq
				}
			}
			err = e.printStream(stream, req)
		}
		if ctx.Err() != nil {
			return nil // interrupted: the normal way to stop watching
		}
		if !established || !retryable(err) {
			return err
		}
		why := "the daemon closed the event stream"
		if err != nil {
			why = "lost the event stream (" + describe(err, e, cmd) + ")"
		}
		fmt.Fprintf(e.Stderr, "attestation: %s; reconnecting in %s, resuming after event %d\n", why, pause, req.GetAfterSeq())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, watchRetryMax)
	}
}

// printStream prints a watch's events, moving req's after_seq along so
// that a reconnection resumes after the last event printed. It returns nil
// when the daemon ends the stream.
func (e *Env) printStream(stream *connect.ServerStreamForClient[attestationv1.WatchEventsResponse], req *attestationv1.WatchEventsRequest) error {
	defer stream.Close()
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if ev == nil {
			continue
		}
		if err := e.printEventLine(ev); err != nil {
			return err
		}
		req.AfterSeq = &ev.Seq
	}
	return stream.Err()
}

// retryable reports whether reconnecting may cure a watch's error: the
// daemon going away, yes; a refused token or a bad request, no.
func retryable(err error) bool {
	if err == nil {
		return true
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return false // not the stream's: stdout closed, say
	}
	switch ce.Code() {
	case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal, connect.CodeAborted,
		connect.CodeDeadlineExceeded, connect.CodeResourceExhausted:
		return true
	}
	return false
}

// printEventLine prints one event as it arrives: a fixed-width line, a
// line of JSON, or a YAML document.
func (e *Env) printEventLine(ev *attestationv1.Event) error {
	switch e.Output {
	case OutputJSON:
		b, err := marshal(ev, OutputJSON, false)
		if err != nil {
			return err
		}
		_, err = e.Stdout.Write(b)
		return err
	case OutputYAML:
		b, err := marshal(ev, OutputYAML, false)
		if err != nil {
			return err
		}
		_, err = e.Stdout.Write(append([]byte("---\n"), b...))
		return err
	}
	// Widths fit the longest type and a UUID, so that lines align without
	// waiting for the next event (and most operators' names).
	_, err := fmt.Fprintf(e.Stdout, "%-6d  %-19s  %-21s  %-36s  %-12s  %s\n",
		ev.Seq, formatTime(ev.Time), ev.Type, orDash(ev.MachineId), orDash(ev.GetActor().GetName()), eventDetails(ev.Payload))
	return err
}

func eventTable(w io.Writer, evs []*attestationv1.Event) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "SEQ\tTIME\tTYPE\tMACHINE\tACTOR\tDETAILS")
	for _, ev := range evs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, formatTime(ev.Time), ev.Type, orDash(ev.MachineId),
			orDash(ev.GetActor().GetName()), eventDetails(ev.Payload))
	}
	return tw.Flush()
}

// commonPayloadFields repeat the event's own columns; details leave them out.
var commonPayloadFields = map[string]bool{
	"event": true, "id": true, "seq": true, "machine_id": true,
	"ek_fingerprint": true, "timestamp": true, "actor": true,
}

// zeroTime is how an unset time.Time appears in a payload.
const zeroTime = "0001-01-01T00:00:00Z"

// eventDetails summarises an event's own payload fields as sorted
// key=value pairs, nested objects flattened (hardware.serial=...), true
// booleans as their bare name, empty, zero and false values left out.
func eventDetails(p *structpb.Struct) string {
	if p == nil {
		return ""
	}
	var pairs []string
	var walk func(prefix string, fields map[string]*structpb.Value)
	walk = func(prefix string, fields map[string]*structpb.Value) {
		for k, v := range fields {
			if prefix == "" && commonPayloadFields[k] {
				continue
			}
			key := prefix + k
			switch x := v.Kind.(type) {
			case *structpb.Value_StructValue:
				walk(key+".", x.StructValue.GetFields())
			case *structpb.Value_StringValue:
				if x.StringValue != "" && x.StringValue != zeroTime {
					pairs = append(pairs, key+"="+quoteIfNeeded(x.StringValue))
				}
			case *structpb.Value_BoolValue:
				if x.BoolValue {
					pairs = append(pairs, key)
				}
			case *structpb.Value_NumberValue:
				if x.NumberValue != 0 {
					pairs = append(pairs, key+"="+strconv.FormatFloat(x.NumberValue, 'f', -1, 64))
				}
			case *structpb.Value_ListValue:
				var items []string
				for _, it := range x.ListValue.GetValues() {
					if s, ok := it.Kind.(*structpb.Value_StringValue); ok {
						items = append(items, s.StringValue)
					} else {
						b, _ := json.Marshal(it.AsInterface())
						items = append(items, string(b))
					}
				}
				if len(items) > 0 {
					pairs = append(pairs, key+"="+quoteIfNeeded(strings.Join(items, ",")))
				}
			}
		}
	}
	walk("", p.GetFields())
	sort.Strings(pairs)
	return strings.Join(pairs, " ")
}

func quoteIfNeeded(s string) string {
	if strings.ContainsAny(s, " \t\n\"=") || s != strings.TrimSpace(s) {
		return strconv.Quote(s)
	}
	return s
}
