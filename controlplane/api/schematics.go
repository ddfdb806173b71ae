package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/attestation/attestation/controlplane/audit"
	"github.com/attestation/attestation/controlplane/store"
	"github.com/attestation/attestation/images/bootassets"
	"github.com/attestation/attestation/images/cache"
	"github.com/attestation/attestation/images/schematic"
	attestationv1 "github.com/attestation/attestation/proto/gen/attestation/v1"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

var _ attestationv1connect.SchematicServiceHandler = (*schematicService)(nil)

type schematicService struct {
	store  *store.Store
	images *cache.Cache
}

func (s *schematicService) CreateSchematic(ctx context.Context, req *connect.Request[attestationv1.CreateSchematicRequest]) (*connect.Response[attestationv1.CreateSchematicResponse], error) {
	doc := []byte("{}")
	if req.Msg.Schematic != nil {
		var err error
		if doc, err = protojson.Marshal(req.Msg.Schematic); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("schematic: %w", err))
		}
	}
	sc, err := schematic.Parse(doc)
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if s.images != nil {
		// A module the boot assets' kernel lacks could never build.
		if err := s.images.Check(sc); err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
	}
	row := &store.Schematic{ID: sc.ID(), Document: sc.Canonical()}
	var created bool
	if _, err := s.store.Update(ctx, func(tx *store.Tx) error {
		if created, err = tx.PutSchematic(ctx, row); err != nil {
			return err
		}
		return tx.Audit(ctx, audit.Record{Action: audit.SchematicCreate, Detail: schematicDetail(row.ID, created)})
	}); err != nil {
		return nil, ToConnect(err)
	}
	pb, err := schematicToProto(row)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.CreateSchematicResponse{Id: row.ID, Schematic: pb, Created: created}), nil
}

func (s *schematicService) GetSchematic(ctx context.Context, req *connect.Request[attestationv1.GetSchematicRequest]) (*connect.Response[attestationv1.GetSchematicResponse], error) {
	row, err := s.store.GetSchematic(ctx, req.Msg.Id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no schematic %s", req.Msg.Id))
	}
	if err != nil {
		return nil, ToConnect(err)
	}
	pb, err := schematicToProto(row)
	if err != nil {
		return nil, ToConnect(err)
	}
	return connect.NewResponse(&attestationv1.GetSchematicResponse{Schematic: pb}), nil
}

func (s *schematicService) ListSchematics(ctx context.Context, _ *connect.Request[attestationv1.ListSchematicsRequest]) (*connect.Response[attestationv1.ListSchematicsResponse], error) {
	rows, err := s.store.ListSchematics(ctx)
	if err != nil {
		return nil, ToConnect(err)
	}
	resp := &attestationv1.ListSchematicsResponse{Schematics: []*attestationv1.Schematic{}}
	for _, row := range rows {
		pb, err := schematicToProto(row)
		if err != nil {
			return nil, ToConnect(err)
		}
		resp.Schematics = append(resp.Schematics, pb)
	}
	return connect.NewResponse(resp), nil
}

// schematicDetail is the detail of a schematic's creation's audit record.
func schematicDetail(id string, created bool) string {
	if created {
		return audit.Detail("schematic", id)
	}
	return audit.Detail("schematic", id, "existed", "true")
}

func schematicToProto(row *store.Schematic) (*attestationv1.Schematic, error) {
	doc := &structpb.Struct{}
	if err := doc.UnmarshalJSON(row.Document); err != nil {
		return nil, fmt.Errorf("stored schematic %s: %w", row.ID, err)
	}
	return &attestationv1.Schematic{Id: row.ID, Schematic: doc, CreatedAt: ts(row.CreatedAt)}, nil
}

func (s *schematicService) BuildImage(ctx context.Context, req *connect.Request[attestationv1.BuildImageRequest]) (*connect.Response[attestationv1.BuildImageResponse], error) {
	if s.images == nil {
		return nil, connect.NewError(connect.CodeUnimplemented, errors.New("this daemon builds no images"))
	}
	id := req.Msg.Id
	img, err := s.images.Get(ctx, id, "")
	switch {
	case errors.Is(err, cache.ErrUnknownSchematic):
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no schematic %s", id))
	case errors.Is(err, bootassets.ErrNotBuilt):
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	case err != nil:
		return nil, ToConnect(err)
	}
	// The image is files, not rows: its record commits on its own, after
	// the build (whose node.image_created names the actor too).
	if _, err := s.store.Update(ctx, func(tx *store.Tx) error {
		return tx.Audit(ctx, audit.Record{Action: audit.ImageBuild, Detail: audit.Detail("schematic", id, "built", strconv.FormatBool(img.Fresh))})
	}); err != nil {
		return nil, ToConnect(err)
	}
	resp := &attestationv1.BuildImageResponse{Id: id, Built: img.Fresh, BuildTime: durationpb.New(img.BuildTime), IsoUrl: s.images.ISOURL(id)}
	for _, name := range slices.Sorted(maps.Keys(img.Files)) {
		f := img.Files[name]
		resp.Files = append(resp.Files, &attestationv1.ImageFile{Name: name, Url: s.images.URL(id, name), Size: f.Size, Sha256: f.SHA256})
	}
	return connect.NewResponse(resp), nil
}
