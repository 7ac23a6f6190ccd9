// Go ttrpc client for the Kata agent API, built from our .proto files with Debian's gogo/ttrpc.
//
// Reads one JSON object per line on stdin:
//
//	{"method": "CreateContainer", "type": "grpc.CreateContainerRequest", "json": "<protobuf JSON>"}
//
// builds the request with Go's protobuf (jsonpb, original field names), sends it over ttrpc like the
// Kata Go runtime does, and prints {"code", "message", "sent": "<hex of the Go encoding>"} per line.
package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"os"
	"reflect"
	"strings"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/jsonpb"
	"github.com/gogo/protobuf/proto"
	"github.com/gogo/protobuf/types"
	"google.golang.org/grpc/status"

	_ "agentpb"
)

type call struct {
	Method string `json:"method"`
	Type   string `json:"type"`
	JSON   string `json:"json"`
}

func main() {
	if len(os.Args) != 2 {
		log.Fatal("usage: agentclient SOCKET")
	}
	conn, err := net.Dial("unix", os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 8<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var c call
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			log.Fatal(err)
		}
		t := proto.MessageType(c.Type)
		if t == nil {
			log.Fatalf("unknown message type %s", c.Type)
		}
		req := reflect.New(t.Elem()).Interface().(proto.Message)
		u := jsonpb.Unmarshaler{AllowUnknownFields: false}
		if err := u.Unmarshal(strings.NewReader(c.JSON), req); err != nil {
			log.Fatalf("%s: %v", c.Type, err)
		}
		sent, err := proto.Marshal(req)
		if err != nil {
			log.Fatal(err)
		}
		var resp types.Empty
		result := map[string]interface{}{"code": 0, "message": "", "sent": hex.EncodeToString(sent)}
		if err := client.Call(context.Background(), "grpc.AgentService", c.Method, req, &resp); err != nil {
			st, ok := status.FromError(err)
			if !ok {
				log.Fatal(err)
			}
			result["code"] = int(st.Code())
			result["message"] = st.Message()
		}
		if err := out.Encode(result); err != nil {
			log.Fatal(fmt.Errorf("stdout: %w", err))
		}
	}
	if err := in.Err(); err != nil {
		log.Fatal(err)
	}
}
