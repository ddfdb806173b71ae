package api

import (
	"context"

	"connectrpc.com/connect"

	"github.com/attestation/attestation/controlplane/configs"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

var _ attestationv1connect.ConfigServiceHandler = (*configService)(nil)

type configService struct {
	configs *configs.Service
}

func (s *configService) SetConfig(ctx context.Context, req *connect.Request[attestationv1.SetConfigRequest]) (*connect.Response[attestationv1.SetConfigResponse], error) {
	c, err := s.configs.Set(ctx, req.Msg.Role, req.Msg.Template, req.Msg.SchematicId)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.SetConfigResponse{Config: configToProto(c)}), nil
}

func (s *configService) GetConfig(ctx context.Context, req *connect.Request[attestationv1.GetConfigRequest]) (*connect.Response[attestationv1.GetConfigResponse], error) {
	c, err := s.configs.Get(ctx, req.Msg.Role)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.GetConfigResponse{Config: configToProto(c)}), nil
}

func (s *configService) DeleteConfig(ctx context.Context, req *connect.Request[attestationv1.DeleteConfigRequest]) (*connect.Response[attestationv1.DeleteConfigResponse], error) {
	c, err := s.configs.Delete(ctx, req.Msg.Role)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.DeleteConfigResponse{Config: configToProto(c)}), nil
}

func (s *configService) ListConfigs(ctx context.Context, _ *connect.Request[attestationv1.ListConfigsRequest]) (*connect.Response[attestationv1.ListConfigsResponse], error) {
	cs, err := s.configs.List(ctx)
	if err != nil {
		return nil, ToConnect(err)
	}
	resp := &attestationv1.ListConfigsResponse{Configs: []*attestationv1.ConfigTemplate{}}
	for _, c := range cs {
		resp.Configs = append(resp.Configs, configToProto(c))
	}
	return connect.NewResponse(resp), nil
}
