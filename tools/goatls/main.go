// goatls is an aTLS peer built only from Go's standard library (crypto/tls), used as an
// interop oracle for attestation/atls. It follows Contrast's aTLS rules: the client's nonce
// travels in ALPN "atls:v1:nonce:<hex>", the server's nonce in the CertificateRequest CA list
// as CN=base64(nonce), and evidence in a self-signed certificate extension whose report data is
// SHA-512(SPKI DER || nonce). Evidence uses the test format of tests/atls/fakes.py:
// "FAKE" || measurement(16) || host_data(32) || report_data(64), OID 1.3.9901.2.3.
//
// Usage:
//
//	goatls server ADDR [require] [tls12] [quiet]  prints "listening HOST:PORT", serves until killed
//	goatls client ADDR [attest] [tls12]    one ping/pong exchange; exit status 1 on failure
//	goatls bench ADDR N CONCURRENCY         N attested (mutual) handshakes + ping/pong, prints rate and latency
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

var evidenceOID = asn1.ObjectIdentifier{1, 3, 9901, 2, 3}

const alpnPrefix = "atls:v1:nonce:"

var measurement = bytes.Repeat([]byte("M"), 16)
var hostData = bytes.Repeat([]byte{0x44}, 32)

func bindReportData(pub any, nonce []byte) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha512.Sum512(append(spki, nonce...))
	return sum[:], nil
}

// selfSigned makes the aTLS certificate; nonce == nil means no evidence extension.
func selfSigned(key *ecdsa.PrivateKey, nonce []byte) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "Contrast"},
		NotBefore:    now.Add(-2 * time.Hour),
		NotAfter:     now.Add(2 * time.Hour),
	}
	if nonce != nil {
		rd, err := bindReportData(&key.PublicKey, nonce)
		if err != nil {
			return tls.Certificate{}, err
		}
		ev := append(append(append([]byte("FAKE"), measurement...), hostData...), rd...)
		tmpl.ExtraExtensions = []pkix.Extension{{Id: evidenceOID, Value: ev}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// checkPeer verifies that the peer's leaf is self-signed and carries evidence bound to nonce.
func checkPeer(raw [][]byte, nonce []byte) error {
	if len(raw) == 0 {
		return errors.New("peer sent no certificate")
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		return fmt.Errorf("peer certificate is not self-signed: %w", err)
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(evidenceOID) {
			continue
		}
		want, err := bindReportData(cert.PublicKey, nonce)
		if err != nil {
			return err
		}
		ev := ext.Value
		if len(ev) != 116 || string(ev[:4]) != "FAKE" {
			return fmt.Errorf("evidence has %d bytes, expected 116", len(ev))
		}
		if !bytes.Equal(ev[4:20], measurement) {
			return fmt.Errorf("measurement is %x, expected %x", ev[4:20], measurement)
		}
		if !bytes.Equal(ev[52:], want) {
			return errors.New("report data does not match")
		}
		if !quiet {
			fmt.Printf("verified peer evidence host_data=%x\n", ev[20:52])
		}
		return nil
	}
	return errors.New("no valid attestation document certificate extensions found")
}

func minVersion(tls12 bool) uint16 {
	if tls12 {
		return tls.VersionTLS12
	}
	return tls.VersionTLS13
}

func serve(addr string, require, tls12 bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	base := &tls.Config{
		MinVersion: minVersion(tls12),
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			var clientNonce []byte
			for _, proto := range hello.SupportedProtos {
				if strings.HasPrefix(proto, alpnPrefix) {
					n, err := hex.DecodeString(strings.TrimPrefix(proto, alpnPrefix))
					if err != nil {
						return nil, err
					}
					clientNonce = n
				}
			}
			if clientNonce == nil {
				return nil, errors.New("client sent no nonce")
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return nil, err
			}
			cert, err := selfSigned(key, clientNonce)
			if err != nil {
				return nil, err
			}
			serverNonce := make([]byte, 32)
			if _, err := rand.Read(serverNonce); err != nil {
				return nil, err
			}
			nonceCert, err := nonceCA(serverNonce)
			if err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			pool.AddCert(nonceCert)
			auth := tls.RequestClientCert
			if require {
				auth = tls.RequireAnyClientCert
			}
			return &tls.Config{
				MinVersion:         minVersion(tls12),
				MaxVersion:         maxVersion(tls12),
				Certificates:       []tls.Certificate{cert},
				NextProtos:         []string{"h2"},
				ClientAuth:         auth,
				ClientCAs:          pool,
				InsecureSkipVerify: true,
				VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
					if !require {
						return nil
					}
					return checkPeer(raw, serverNonce)
				},
			}, nil
		},
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		go handle(tls.Server(conn, base))
	}
}

func maxVersion(tls12 bool) uint16 {
	if tls12 {
		return tls.VersionTLS12
	}
	return tls.VersionTLS13
}

func nonceCA(nonce []byte) (*x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0),
		Subject:      pkix.Name{CommonName: base64.StdEncoding.EncodeToString(nonce)},
		NotBefore:    time.Now(),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func handle(conn *tls.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		if !quiet {
			fmt.Printf("server handshake error: %v\n", err)
		}
		return
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil {
		if !quiet {
			fmt.Printf("server read error: %v\n", err)
		}
		return
	}
	state := conn.ConnectionState()
	if _, err := conn.Write(append([]byte("pong:"), buf...)); err != nil {
		fmt.Printf("server write error: %v\n", err)
		return
	}
	if !quiet {
		fmt.Printf("server ok version=%x alpn=%s client_certs=%d\n", state.Version, state.NegotiatedProtocol,
			len(state.PeerCertificates))
	}
}

func bench(addr string, n, concurrency int) error {
	var mu sync.Mutex
	var latencies []time.Duration
	var failures int
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				t0 := time.Now()
				err := dialQuiet(addr)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					failures++
				} else {
					latencies = append(latencies, d)
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	if len(latencies) == 0 {
		return fmt.Errorf("all %d handshakes failed", failures)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	fmt.Printf("bench ok=%d failed=%d seconds=%.3f rate=%.1f p50_ms=%.2f p99_ms=%.2f\n", len(latencies), failures,
		elapsed.Seconds(), float64(len(latencies))/elapsed.Seconds(), pct(0.5), pct(0.99))
	return nil
}

var quiet = false

func dialQuiet(addr string) error {
	return dial(addr, true, false)
}

func dial(addr string, attest, tls12 bool) error {
	clientNonce := make([]byte, 32)
	if _, err := rand.Read(clientNonce); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	cfg := &tls.Config{
		MinVersion:         minVersion(tls12),
		MaxVersion:         maxVersion(tls12),
		InsecureSkipVerify: true,
		NextProtos:         []string{alpnPrefix + hex.EncodeToString(clientNonce), "h2"},
		GetClientCertificate: func(req *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			var nonce []byte
			if attest {
				if len(req.AcceptableCAs) == 0 {
					return nil, errors.New("server sent no CA names")
				}
				var rdns pkix.RDNSequence
				if _, err := asn1.Unmarshal(req.AcceptableCAs[0], &rdns); err != nil {
					return nil, err
				}
				var name pkix.Name
				name.FillFromRDNSequence(&rdns)
				n, err := base64.StdEncoding.DecodeString(name.CommonName)
				if err != nil {
					return nil, err
				}
				nonce = n
			}
			cert, err := selfSigned(key, nonce)
			return &cert, err
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return checkPeer(raw, clientNonce)
		},
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 9)
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != "pong:ping" {
		return fmt.Errorf("unexpected reply %q", buf)
	}
	state := conn.ConnectionState()
	if !quiet {
		fmt.Printf("client ok version=%x alpn=%s\n", state.Version, state.NegotiatedProtocol)
	}
	return nil
}

func has(args []string, flag string) bool {
	for _, a := range args {
		if a == flag {
			return true
		}
	}
	return false
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: goatls server|client ADDR [require|attest] [tls12]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		quiet = has(os.Args[3:], "quiet")
		err = serve(os.Args[2], has(os.Args[3:], "require"), has(os.Args[3:], "tls12"))
	case "client":
		err = dial(os.Args[2], has(os.Args[3:], "attest"), has(os.Args[3:], "tls12"))
	case "bench":
		quiet = true
		n, _ := strconv.Atoi(os.Args[3])
		c, _ := strconv.Atoi(os.Args[4])
		err = bench(os.Args[2], n, c)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
}
