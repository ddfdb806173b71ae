module example.com/rack

go 1.26

require github.com/attestation/attestation v1.0.0
