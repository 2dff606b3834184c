module snailjob-bench/goclient

go 1.22.7

require (
	github.com/open-snail/snail-job-go v0.0.3
	github.com/sirupsen/logrus v1.9.3
)

require (
	golang.org/x/net v0.31.0 // indirect
	golang.org/x/sys v0.27.0 // indirect
	golang.org/x/text v0.20.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240903143218-8af14fe29dc1 // indirect
	google.golang.org/grpc v1.68.0 // indirect
	google.golang.org/protobuf v1.35.2 // indirect
)

// The pinned upstream source with snail-job-go-v0.0.3.patch applied; benchmarks/go_peer.py puts it there.
replace github.com/open-snail/snail-job-go => ../.go-build/snail-job-go
