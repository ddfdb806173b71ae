package api

import (
	"context"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/events"
	"github.com/attestation/attestation/controlplane/lifecycle"
	"github.com/attestation/attestation/controlplane/machines"
	"github.com/attestation/attestation/controlplane/store"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

const (
	defaultPageSize = 100
	watchPoll       = time.Second
)

var (
	_ attestationv1connect.MachineServiceHandler   = (*machineService)(nil)
	_ attestationv1connect.EventServiceHandler     = (*eventService)(nil)
	_ attestationv1connect.ExtensionServiceHandler = (*extensionService)(nil)
)

type machineService struct {
	machines *machines.Service
	store    *store.Store
}

func (s *machineService) ListMachines(ctx context.Context, req *connect.Request[attestationv1.ListMachinesRequest]) (*connect.Response[attestationv1.ListMachinesResponse], error) {
	f := store.MachineFilter{State: lifecycle.State(req.Msg.State), Role: req.Msg.Role, Limit: int(req.Msg.PageSize)}
	if f.Limit == 0 {
		f.Limit = defaultPageSize
	}
	if req.Msg.PageToken != "" {
		var err error
		if f.AfterTime, f.AfterID, err = parsePageToken(req.Msg.PageToken); err != nil {
			return nil, err
		}
	}
	f.Limit++ // one more tells whether there is a next page
	ms, err := s.store.ListMachines(ctx, f)
	if err != nil {
		return nil, ToConnect(err)
	}
	resp := &attestationv1.ListMachinesResponse{Machines: []*attestationv1.Machine{}}
	if len(ms) == f.Limit {
		ms = ms[:len(ms)-1]
		resp.NextPageToken = pageToken(ms[len(ms)-1])
	}
	for _, m := range ms {
		resp.Machines = append(resp.Machines, machineToProto(m))
	}
	return connect.NewResponse(resp), nil
}

func (s *machineService) GetMachine(ctx context.Context, req *connect.Request[attestationv1.GetMachineRequest]) (*connect.Response[attestationv1.GetMachineResponse], error) {
	m, err := s.machines.Get(ctx, req.Msg.Id)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.GetMachineResponse{Machine: machineToProto(m)}), nil
}

func (s *machineService) RegisterMachine(ctx context.Context, req *connect.Request[attestationv1.RegisterMachineRequest]) (*connect.Response[attestationv1.RegisterMachineResponse], error) {
	m, err := s.machines.Register(ctx, machines.Registration{
		EKFingerprint: req.Msg.EkFingerprint,
		MACs:          req.Msg.Macs,
		Role:          req.Msg.Role,
		Hostname:      req.Msg.Hostname,
		SchematicID:   req.Msg.SchematicId,
	})
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.RegisterMachineResponse{Machine: machineToProto(m)}), nil
}

func (s *machineService) ApproveMachine(ctx context.Context, req *connect.Request[attestationv1.ApproveMachineRequest]) (*connect.Response[attestationv1.ApproveMachineResponse], error) {
	m, err := s.machines.Approve(ctx, req.Msg.Id, machines.Approval{
		Role:        req.Msg.Role,
		Hostname:    req.Msg.Hostname,
		SchematicID: req.Msg.SchematicId,
	})
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.ApproveMachineResponse{Machine: machineToProto(m)}), nil
}

func (s *machineService) RevokeMachine(ctx context.Context, req *connect.Request[attestationv1.RevokeMachineRequest]) (*connect.Response[attestationv1.RevokeMachineResponse], error) {
	m, err := s.machines.Revoke(ctx, req.Msg.Id, req.Msg.Reason)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.RevokeMachineResponse{Machine: machineToProto(m)}), nil
}

func (s *machineService) SetMachineRole(ctx context.Context, req *connect.Request[attestationv1.SetMachineRoleRequest]) (*connect.Response[attestationv1.SetMachineRoleResponse], error) {
	m, err := s.machines.SetRole(ctx, req.Msg.Id, req.Msg.Role)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.SetMachineRoleResponse{Machine: machineToProto(m)}), nil
}

func (s *machineService) ReinstateMachine(ctx context.Context, req *connect.Request[attestationv1.ReinstateMachineRequest]) (*connect.Response[attestationv1.ReinstateMachineResponse], error) {
	m, err := s.machines.Reinstate(ctx, req.Msg.Id)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.ReinstateMachineResponse{Machine: machineToProto(m)}), nil
}

type eventService struct {
	store     *store.Store
	committed *events.Signal
	stopping  <-chan struct{}
}

func (s *eventService) ListEvents(ctx context.Context, req *connect.Request[attestationv1.ListEventsRequest]) (*connect.Response[attestationv1.ListEventsResponse], error) {
	limit := int(req.Msg.PageSize)
	if limit == 0 {
		limit = defaultPageSize
	}
	evs, err := s.store.ListEvents(ctx, store.EventFilter{
		MachineID: machines.NormalizeID(req.Msg.Machine),
		Type:      events.Type(req.Msg.Type),
		AfterSeq:  req.Msg.AfterSeq,
		Limit:     limit + 1, // one more tells whether there is a next page
	})
	if err != nil {
		return nil, ToConnect(err)
	}
	resp := &attestationv1.ListEventsResponse{Events: []*attestationv1.Event{}}
	if len(evs) > limit {
		evs = evs[:limit]
		resp.NextAfterSeq = evs[len(evs)-1].Seq
	}
	for _, e := range evs {
		pe, err := eventToProto(e)
		if err != nil {
			return nil, ToConnect(err)
		}
		resp.Events = append(resp.Events, pe)
	}
	return connect.NewResponse(resp), nil
}

// WatchStartHeader is the response header of WatchEvents that carries the
// sequence number the watch starts after.
const WatchStartHeader = "Attestation-Watch-After-Seq"

func (s *eventService) WatchEvents(ctx context.Context, req *connect.Request[attestationv1.WatchEventsRequest], stream *connect.ServerStream[attestationv1.WatchEventsResponse]) error {
	var after int64
	if req.Msg.AfterSeq != nil {
		after = *req.Msg.AfterSeq
	} else {
		var err error
		if after, err = s.store.LastEventSeq(ctx); err != nil {
			return ToConnect(err)
		}
	}
	// Headers go out now, so a client knows the watch is established, and
	// where it starts: a client that loses the stream before any event
	// resumes after that sequence number and misses nothing.
	stream.ResponseHeader().Set(WatchStartHeader, strconv.FormatInt(after, 10))
	if err := stream.Send(nil); err != nil {
		return err
	}
	for {
		woken := s.committed.C()
		evs, err := s.store.ListEvents(ctx, store.EventFilter{MachineID: machines.NormalizeID(req.Msg.Machine), AfterSeq: after, Limit: 500})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return ToConnect(err)
		}
		for _, e := range evs {
			pe, err := eventToProto(e)
			if err != nil {
				return ToConnect(err)
			}
			if err := stream.Send(&attestationv1.WatchEventsResponse{Event: pe}); err != nil {
				return err
			}
			after = e.Seq
		}
		if len(evs) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case <-woken:
		case <-time.After(watchPoll):
		}
	}
}

// Extension is one loaded extension as ListExtensions reports it.
type Extension struct {
	Name, Version, Description string
	// Status is "running", or why the extension failed.
	Status string
}

type extensionService struct {
	list func() []Extension
}

func (s *extensionService) ListExtensions(context.Context, *connect.Request[attestationv1.ListExtensionsRequest]) (*connect.Response[attestationv1.ListExtensionsResponse], error) {
	resp := &attestationv1.ListExtensionsResponse{Extensions: map[string]*attestationv1.ExtensionInfo{}}
	if s.list == nil {
		return connect.NewResponse(resp), nil
	}
	for _, e := range s.list() {
		resp.Extensions[e.Name] = &attestationv1.ExtensionInfo{Version: e.Version, Description: e.Description, Status: e.Status}
	}
	return connect.NewResponse(resp), nil
}
