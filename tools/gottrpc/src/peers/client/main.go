// Go ttrpc interop client. Modes (one JSON object per line on stdout):
//   -call: one Echo call with -id/-data/-sleep/-timeout/-md/-reply-size, prints the reply or the error status
//   -bench: -n calls by -c goroutines sharing one connection, prints rate and latency percentiles
//   -stress: -n concurrent calls at once, each checked; every 10th has a deadline shorter than its sleep
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/status"

	"peers/echopb"
)

func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(b))
}

func errorJSON(err error) map[string]interface{} {
	out := map[string]interface{}{"error": err.Error()}
	if st, ok := status.FromError(err); ok {
		out["code"] = int(st.Code())
		out["message"] = st.Message()
	}
	if err == context.DeadlineExceeded {
		out["deadline"] = true
	}
	return out
}

func main() {
	sock := flag.String("sock", "", "unix socket path to dial")
	mode := flag.String("mode", "call", "call | bench | stress")
	id := flag.String("id", "c1", "request id")
	data := flag.String("data", "hello", "request data")
	sleep := flag.Uint("sleep", 0, "server-side sleep in ms")
	replySize := flag.Uint("reply-size", 0, "ask the server for this many reply bytes")
	timeout := flag.Duration("timeout", 0, "call deadline (0 = none)")
	md := flag.String("md", "", "metadata as k=v,k=v")
	n := flag.Int("n", 20000, "calls (bench, stress)")
	conc := flag.Int("c", 1, "goroutines sharing the connection (bench)")
	size := flag.Int("size", 16, "payload bytes (bench)")
	flag.Parse()

	conn, err := net.Dial("unix", *sock)
	if err != nil {
		log.Fatal(err)
	}
	tc := ttrpc.NewClient(conn)
	defer tc.Close()
	cl := echopb.NewAgentServiceClient(tc)
	bg := context.Background()

	switch *mode {
	case "call":
		ctx := bg
		if *md != "" {
			m := ttrpc.MD{}
			for _, kv := range strings.Split(*md, ",") {
				p := strings.SplitN(kv, "=", 2)
				m.Append(p[0], p[1])
			}
			ctx = ttrpc.WithMetadata(ctx, m)
		}
		if *timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, *timeout)
			defer cancel()
		}
		r, err := cl.Echo(ctx, &echopb.EchoRequest{Id: *id, Data: []byte(*data), SleepMs: uint32(*sleep), ReplySize: uint32(*replySize)})
		if err != nil {
			emit(errorJSON(err))
			return
		}
		data := string(r.Data)
		if *replySize > 0 {
			data = fmt.Sprintf("<%d bytes>", len(r.Data))
		}
		emit(map[string]interface{}{"id": r.Id, "data": data, "seq": r.Seq, "metadata": r.Metadata, "timeout_ms": r.TimeoutMs})
	case "bench":
		payload := bytes.Repeat([]byte{'x'}, *size)
		for i := 0; i < 200; i++ { // warm-up
			if _, err := cl.Echo(bg, &echopb.EchoRequest{Id: "w", Data: payload}); err != nil {
				log.Fatal(err)
			}
		}
		per := *n / *conc
		lat := make([][]time.Duration, *conc)
		var wg sync.WaitGroup
		start := time.Now()
		for g := 0; g < *conc; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				l := make([]time.Duration, 0, per)
				for i := 0; i < per; i++ {
					t0 := time.Now()
					if _, err := cl.Echo(bg, &echopb.EchoRequest{Id: "bench", Data: payload}); err != nil {
						log.Fatal(err)
					}
					l = append(l, time.Since(t0))
				}
				lat[g] = l
			}(g)
		}
		wg.Wait()
		elapsed := time.Since(start)
		var all []time.Duration
		for _, l := range lat {
			all = append(all, l...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		q := func(p float64) int64 { return all[int(p*float64(len(all)-1))].Nanoseconds() }
		emit(map[string]interface{}{"calls": len(all), "conc": *conc, "seconds": elapsed.Seconds(),
			"rate": float64(len(all)) / elapsed.Seconds(), "p50_ns": q(0.5), "p99_ns": q(0.99)})
	case "stress":
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok, deadlines, bad := 0, 0, []string{}
		for i := 0; i < *n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				want := fmt.Sprintf("s%d", i)
				ctx, cancel := context.WithTimeout(bg, 30*time.Second)
				req := &echopb.EchoRequest{Id: want, Data: []byte(want + "-data")}
				expectDeadline := i%10 == 0
				if expectDeadline { // deadline shorter than the server-side sleep
					cancel()
					ctx, cancel = context.WithTimeout(bg, 200*time.Millisecond)
					req.SleepMs = 5000
				}
				defer cancel()
				r, err := cl.Echo(ctx, req)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case expectDeadline && err != nil:
					deadlines++
				case !expectDeadline && err == nil && r.Id == want && string(r.Data) == want+"-data":
					ok++
				default:
					bad = append(bad, fmt.Sprintf("%d: %v %v", i, r, err))
				}
			}(i)
		}
		wg.Wait()
		if len(bad) > 5 {
			bad = bad[:5]
		}
		emit(map[string]interface{}{"ok": ok, "deadlines": deadlines, "bad": bad})
	default:
		fmt.Fprintln(os.Stderr, "unknown -mode")
		os.Exit(2)
	}
}
