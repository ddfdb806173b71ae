module github.com/diskfs/go-diskfs

go 1.25.0

require (
	github.com/anchore/go-lzo v0.1.0
	github.com/djherbis/times v1.6.0
	github.com/elliotwutingfeng/asciiset v0.0.0-20260129054604-cfde2086bc57
	github.com/go-test/deep v1.1.1
	github.com/google/go-cmp v0.7.0
	github.com/google/uuid v1.6.0
	github.com/klauspost/compress v1.18.5
	github.com/pierrec/lz4/v4 v4.1.26
	github.com/pkg/xattr v0.4.12
	github.com/sirupsen/logrus v1.9.4
	github.com/ulikunitz/xz v0.5.15
	golang.org/x/sys v0.43.0
)
