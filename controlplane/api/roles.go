package api

import (
	"strings"

	"github.com/attestation/attestation/controlplane/auth"
	"github.com/attestation/attestation/proto/gen/attestation/v1/attestationv1connect"
)

// procedureRoles is the role each operator procedure needs: viewers
// read (the audit trail too); operators also approve, revoke, reinstate, register and set
// roles; admins also manage configs (which may hold secrets, so reading
// them is theirs too) and schematics. A procedure not listed needs admin.
var procedureRoles = map[string]auth.Role{
	attestationv1connect.MachineServiceListMachinesProcedure:      auth.Viewer,
	attestationv1connect.MachineServiceGetMachineProcedure:        auth.Viewer,
	attestationv1connect.MachineServiceRegisterMachineProcedure:   auth.Operator,
	attestationv1connect.MachineServiceApproveMachineProcedure:    auth.Operator,
	attestationv1connect.MachineServiceRevokeMachineProcedure:     auth.Operator,
	attestationv1connect.MachineServiceSetMachineRoleProcedure:    auth.Operator,
	attestationv1connect.MachineServiceReinstateMachineProcedure:  auth.Operator,
	attestationv1connect.EventServiceListEventsProcedure:          auth.Viewer,
	attestationv1connect.EventServiceWatchEventsProcedure:         auth.Viewer,
	attestationv1connect.ExtensionServiceListExtensionsProcedure:  auth.Viewer,
	attestationv1connect.SchematicServiceGetSchematicProcedure:    auth.Viewer,
	attestationv1connect.SchematicServiceListSchematicsProcedure:  auth.Viewer,
	attestationv1connect.SchematicServiceCreateSchematicProcedure: auth.Admin,
	attestationv1connect.SchematicServiceBuildImageProcedure:      auth.Admin,
	attestationv1connect.ConfigServiceSetConfigProcedure:          auth.Admin,
	attestationv1connect.ConfigServiceGetConfigProcedure:          auth.Admin,
	attestationv1connect.ConfigServiceListConfigsProcedure:        auth.Admin,
	attestationv1connect.ConfigServiceDeleteConfigProcedure:       auth.Admin,
	attestationv1connect.AuditServiceListAuditRecordsProcedure:    auth.Viewer,
}

// RequiredRole is the role an operator procedure (/pkg.Service/Method)
// needs. gRPC reflection describes the API to any viewer.
func RequiredRole(procedure string) auth.Role {
	if r, ok := procedureRoles[procedure]; ok {
		return r
	}
	if strings.HasPrefix(procedure, "/grpc.reflection.") {
		return auth.Viewer
	}
	return auth.Admin
}

// DeclaresRole reports whether procedure is listed with its role (a test
// proves every operator procedure is).
func DeclaresRole(procedure string) bool {
	_, ok := procedureRoles[procedure]
	return ok
}
