// Command sj-go-echo-client is the benchmark peer for SnailJob's Go client
// (github.com/open-snail/snail-job-go): that library with three trivial
// executors, configured from the SNAIL_* environment the load generator
// gives every client process. benchmarks/go_peer.py builds it against the
// pinned upstream source with snail-job-go-v0.0.3.patch applied.
//
// Executors (the twins of benchmarks/bench_client.py's):
//
//   - bench: succeeds at once with {"params": <jobParams>} (cluster,
//     broadcast and sharding tasks), like the Java peer's echoExecutor;
//   - benchMap (map): ROOT_MAP succeeds, or with jobParams "fanout:N" maps N
//     sub-tasks named CHILD (the library refuses more than 500 per call, so
//     it calls DoMap once per 500); CHILD succeeds;
//   - benchMR (map-reduce): the map, reduce and merge stages succeed.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	snailjob "github.com/open-snail/snail-job-go"
	"github.com/open-snail/snail-job-go/constant"
	"github.com/open-snail/snail-job-go/dto"
	"github.com/open-snail/snail-job-go/job"
	"github.com/sirupsen/logrus"
)

// upstream names the library build; go_peer.py sets it with -ldflags -X.
var upstream = "github.com/open-snail/snail-job-go (unknown version)"

const mapChunk = 500

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

// level maps SNAIL_LOG_LEVEL (Python's names) to logrus.
func level(name string) logrus.Level {
	switch strings.ToUpper(name) {
	case "DEBUG":
		return logrus.DebugLevel
	case "INFO":
		return logrus.InfoLevel
	case "ERROR", "CRITICAL":
		return logrus.ErrorLevel
	default:
		return logrus.WarnLevel
	}
}

// paramsText renders jobParams the way the Java peer's String.valueOf does.
func paramsText(params interface{}) string {
	switch v := params.(type) {
	case nil:
		return "null"
	case string:
		return v
	default:
		text, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprint(v)
		}
		return string(text)
	}
}

type echo struct {
	job.BaseJobExecutor
}

func (e *echo) DoJobExecute(args dto.IJobArgs) dto.ExecuteResult {
	return *dto.Success().WithResult(map[string]string{"params": paramsText(args.GetJobParams())})
}

type benchMap struct {
	job.BaseMapJobExecutor
}

func (e *benchMap) DoJobMapExecute(args *dto.MapArgs) dto.ExecuteResult {
	if args.TaskName != constant.ROOT_MAP {
		return *dto.Success()
	}
	params := paramsText(args.GetJobParams())
	if !strings.HasPrefix(params, "fanout:") {
		return *dto.Success()
	}
	n, err := strconv.Atoi(strings.TrimPrefix(params, "fanout:"))
	if err != nil || n <= 0 {
		return *dto.Failure().WithMessage("bad fanout: " + params)
	}
	for start := 0; start < n; start += mapChunk {
		end := start + mapChunk
		if end > n {
			end = n
		}
		items := make([]interface{}, 0, end-start)
		for i := start; i < end; i++ {
			items = append(items, i)
		}
		if result, err := e.DoMap(items, "CHILD"); err != nil {
			return *result.WithMessage(err.Error())
		}
	}
	return *dto.Success()
}

type benchMR struct {
	job.BaseMapReduceJobExecutor
}

func (e *benchMR) DoJobMapExecute(*dto.MapArgs) dto.ExecuteResult { return *dto.Success() }

func (e *benchMR) DoReduceExecute(*dto.ReduceArgs) dto.ExecuteResult { return *dto.Success() }

func (e *benchMR) DoMergeReduceExecute(*dto.MergeReduceArgs) dto.ExecuteResult { return *dto.Success() }

// writeIdent records which library this process runs (BENCH_IDENT_FILE, as bench_client.py does).
func writeIdent() {
	path := os.Getenv("BENCH_IDENT_FILE")
	if path == "" {
		return
	}
	text, _ := json.Marshal(map[string]string{"snail-job-go": upstream, "go": runtime.Version()})
	_ = os.WriteFile(path, text, 0o644)
}

func main() {
	manager := snailjob.NewSnailJobManager(&dto.Options{
		ServerHost: env("SNAIL_SERVER_HOST", "127.0.0.1"),
		ServerPort: env("SNAIL_SERVER_PORT", "17888"),
		HostIP:     env("SNAIL_HOST_IP", "127.0.0.1"),
		HostPort:   env("SNAIL_HOST_PORT", "17889"),
		Namespace:  env("SNAIL_NAMESPACE", ""),
		GroupName:  env("SNAIL_GROUP_NAME", ""),
		Token:      env("SNAIL_TOKEN", ""),
		Level:      level(env("SNAIL_LOG_LEVEL", "WARNING")),
		// the library's remote-log hook panics on entries without caller information
		ReportCaller: true,
	})
	manager.Register("bench", func() job.IJobExecutor { return &echo{} }).
		Register("benchMap", func() job.IJobExecutor { return &benchMap{} }).
		Register("benchMR", func() job.IJobExecutor { return &benchMR{} })
	writeIdent()
	if err := manager.Init(); err != nil {
		fmt.Fprintln(os.Stderr, "init:", err)
		os.Exit(1)
	}
	manager.Run()
}
