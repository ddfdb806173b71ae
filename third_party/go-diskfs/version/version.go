package version

const (
	// AppName name and URL to app
	AppName = "https://github.com/diskfs/go-diskfs"
)
