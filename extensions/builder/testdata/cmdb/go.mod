module example.com/attestation-cmdb

go 1.26

require (
	github.com/attestation/attestation v1.0.0
	github.com/spf13/cobra v1.10.2
)
