package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestation/attestation/controlplane/configs"
	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
)

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func machineToProto(m *store.Machine) *attestationv1.Machine {
	return &attestationv1.Machine{
		Id:                 m.ID,
		EkFingerprint:      m.EKFingerprint,
		State:              string(m.State),
		Macs:               m.MACs,
		SmbiosUuid:         m.SMBIOSUUID,
		Serial:             m.Serial,
		Product:            m.Product,
		Ip:                 m.IP,
		Hostname:           m.Hostname,
		Role:               m.Role,
		SchematicId:        m.SchematicID,
		PreRegistered:      m.PreRegistered,
		TpmAvailable:       m.TPMAvailable,
		RegisteredAt:       ts(m.RegisteredAt),
		FirstSeenAt:        ts(m.FirstSeenAt),
		ApprovedAt:         ts(m.ApprovedAt),
		LastHeartbeatAt:    ts(m.LastHeartbeatAt),
		DecommissionedAt:   ts(m.DecommissionedAt),
		DecommissionReason: m.DecommissionReason,
		UpdatedAt:          ts(m.UpdatedAt),
		ConflictWith:       m.ConflictWith,
		AttestedAt:         ts(m.AttestedAt),
		ConfiguredAt:       ts(m.ConfiguredAt),
	}
}

func configToProto(c *store.ConfigTemplate) *attestationv1.ConfigTemplate {
	return &attestationv1.ConfigTemplate{Role: c.Role, Template: c.Template, SchematicId: c.SchematicID, UpdatedAt: ts(c.UpdatedAt)}
}

func eventToProto(e events.Envelope) (*attestationv1.Event, error) {
	var fields map[string]any
	if err := json.Unmarshal(e.Payload, &fields); err != nil {
		return nil, fmt.Errorf("decode payload of event %d: %w", e.Seq, err)
	}
	payload, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, fmt.Errorf("convert payload of event %d: %w", e.Seq, err)
	}
	pe := &attestationv1.Event{
		Seq:           e.Seq,
		Id:            e.ID,
		Type:          string(e.Type),
		MachineId:     e.MachineID,
		EkFingerprint: e.EKFingerprint,
		Time:          timestamppb.New(e.Time),
		Payload:       payload,
	}
	if e.Actor != nil {
		pe.Actor = &attestationv1.Actor{Subject: e.Actor.Subject, Name: e.Actor.Name}
	}
	return pe, nil
}

// pageToken encodes a machine list position.
func pageToken(m *store.Machine) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(m.RegisteredAt.UnixNano(), 10) + ":" + m.ID))
}

func parsePageToken(tok string) (time.Time, string, error) {
	bad := connect.NewError(connect.CodeInvalidArgument, errors.New("page_token: not a token from a previous response"))
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return time.Time{}, "", bad
	}
	ns, id, ok := strings.Cut(string(raw), ":")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" {
		return time.Time{}, "", bad
	}
	return time.Unix(0, n), id, nil
}

// ToConnect maps domain errors to Connect codes; it is the only place
// that does (the agent service uses it too).
func ToConnect(err error) error {
	var (
		te *lifecycle.TransitionError
		de *machines.DecommissionedError
		ee *machines.ExistsError
		ie *configs.InvalidError
		se *machines.UnknownSchematicError
		me *machines.MissingError
		ce *connect.Error
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return err
	case errors.As(err, &ie), errors.As(err, &se), errors.As(err, &me):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, machines.ErrNotFound), errors.Is(err, store.ErrNotFound), errors.Is(err, configs.ErrNoTemplate):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.As(err, &de):
		return connect.NewError(connect.CodeFailedPrecondition, de)
	case errors.As(err, &te):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.As(err, &ee):
		if ee.State == lifecycle.Decommissioned {
			return connect.NewError(connect.CodeFailedPrecondition, err)
		}
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}
