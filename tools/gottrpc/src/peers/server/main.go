// Go ttrpc interop server (containerd/ttrpc from Debian): serves ttrpcecho.AgentService/Echo on a unix socket
// and reports what it received (metadata, deadline) so tests can check what a proxy forwarded.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"peers/echopb"
)

type echoService struct{ seq uint64 }

func (s *echoService) Echo(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	arrived := time.Now()
	if msg := strings.TrimPrefix(req.Id, "error:"); msg != req.Id {
		return nil, status.Error(codes.PermissionDenied, msg)
	}
	resp := &echopb.EchoResponse{Id: req.Id, Data: req.Data, Seq: atomic.AddUint64(&s.seq, 1)}
	if dl, ok := ctx.Deadline(); ok {
		resp.TimeoutMs = dl.Sub(arrived).Milliseconds()
	}
	if md, ok := ttrpc.GetMetadata(ctx); ok {
		for k, vs := range md {
			for _, v := range vs {
				resp.Metadata = append(resp.Metadata, k+"="+v)
			}
		}
		sort.Strings(resp.Metadata)
	}
	if req.SleepMs > 0 {
		select {
		case <-time.After(time.Duration(req.SleepMs) * time.Millisecond):
		case <-ctx.Done():
			return nil, status.Error(codes.DeadlineExceeded, "go server: "+ctx.Err().Error())
		}
	}
	if req.ReplySize > 0 {
		resp.Data = make([]byte, req.ReplySize)
	}
	return resp, nil
}

func main() {
	sock := flag.String("sock", "", "unix socket path to listen on")
	flag.Parse()
	if *sock == "" {
		log.Fatal("-sock is required")
	}
	_ = os.Remove(*sock)
	l, err := net.Listen("unix", *sock)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		log.Fatal(err)
	}
	echopb.RegisterAgentServiceService(srv, &echoService{})
	fmt.Println("ready")
	if err := srv.Serve(context.Background(), l); err != nil {
		log.Fatal(err)
	}
}
