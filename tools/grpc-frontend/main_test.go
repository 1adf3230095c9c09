package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type frame struct {
	id      uint64
	method  string
	payload []byte
}

// readCall reads one call or cancel frame as the model server would.
func readCall(t *testing.T, in *bufio.Reader) frame {
	t.Helper()
	var header [14]byte
	if _, err := io.ReadFull(in, header[:]); err != nil {
		t.Fatalf("reading a call header: %v", err)
	}
	size := binary.LittleEndian.Uint32(header[0:4])
	methodLength := binary.LittleEndian.Uint16(header[12:14])
	rest := make([]byte, size-10)
	if _, err := io.ReadFull(in, rest); err != nil {
		t.Fatalf("reading a call body: %v", err)
	}
	return frame{
		id:      binary.LittleEndian.Uint64(header[4:12]),
		method:  string(rest[:methodLength]),
		payload: rest[methodLength:],
	}
}

func writeAnswer(t *testing.T, out net.Conn, id uint64, code codes.Code, payload []byte) {
	t.Helper()
	answer := make([]byte, 13, 13+len(payload))
	binary.LittleEndian.PutUint32(answer[0:4], uint32(9+len(payload)))
	binary.LittleEndian.PutUint64(answer[4:12], id)
	answer[12] = byte(code)
	if _, err := out.Write(append(answer, payload...)); err != nil {
		t.Fatalf("writing an answer: %v", err)
	}
}

func TestCallsAreRelayedAndAnsweredByID(t *testing.T) {
	front, server := net.Pipe()
	relay := newRelay(front)
	in := bufio.NewReader(server)

	type result struct {
		got answer
		err error
	}
	results := make(chan result, 2)
	for _, request := range []string{"first", "second"} {
		go func() {
			got, err := relay.call(context.Background(), "/pkg.Service/Method", []byte(request))
			results <- result{got, err}
		}()
	}
	calls := []frame{readCall(t, in), readCall(t, in)}
	for _, call := range calls {
		if call.method != "/pkg.Service/Method" {
			t.Fatalf("method %q", call.method)
		}
	}
	// Answers may come back in any order; each reaches its own caller.
	writeAnswer(t, server, calls[1].id, codes.OK, append([]byte("re:"), calls[1].payload...))
	writeAnswer(t, server, calls[0].id, codes.NotFound, []byte("no such model"))
	seen := map[string]bool{}
	for range calls {
		r := <-results
		if r.err != nil {
			t.Fatalf("call failed: %v", r.err)
		}
		seen[r.got.code.String()+" "+string(r.got.payload)] = true
	}
	first, second := string(calls[0].payload), string(calls[1].payload)
	if !seen["NotFound no such model"] || !seen["OK re:"+second] || first == second {
		t.Fatalf("answers went astray: %v", seen)
	}
}

func TestAnAbandonedCallSendsACancelFrame(t *testing.T) {
	front, server := net.Pipe()
	relay := newRelay(front)
	in := bufio.NewReader(server)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := relay.call(ctx, "/pkg.Service/Slow", nil)
		done <- err
	}()
	call := readCall(t, in)
	cancel()
	cancelFrame := readCall(t, in)
	if cancelFrame.id != call.id || cancelFrame.method != "" {
		t.Fatalf("want a cancel frame for %d, got %+v", call.id, cancelFrame)
	}
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("want Canceled, got %v", err)
	}
	// A late answer for it is dropped without harm.
	writeAnswer(t, server, call.id, codes.OK, []byte("late"))
}

func TestCallsFailUnavailableOnceTheServerIsGone(t *testing.T) {
	front, server := net.Pipe()
	relay := newRelay(front)
	server.Close()
	select {
	case <-relay.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay did not notice the closed socket")
	}
	if _, err := relay.call(context.Background(), "/pkg.Service/Method", nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("want Unavailable, got %v", err)
	}
}

func TestChannelArgumentsTurnIntoServerSettings(t *testing.T) {
	settings := settingsFrom(channelArgs{
		"grpc.max_receive_message_length": "4096",
		"grpc.max_concurrent_streams":     "100",
		"grpc.max_connection_age_ms":      "30000",
		"grpc.so_reuseport":               "1",
		"grpc.no_such_knob":               "1",
		"grpc.primary_user_agent":         "text",
	})
	if !settings.reusePort {
		t.Fatal("grpc.so_reuseport=1 must set SO_REUSEPORT")
	}
	// One option each for the message size and the stream limit, one for all the keepalive
	// parameters; the rest ignored.
	if len(settings.options) != 3 {
		t.Fatalf("want 3 server options, got %d", len(settings.options))
	}
}

func TestBadTLSFilesAreStartUpErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsConfig(dir+"/cert.pem", dir+"/key.pem", "", false); err == nil ||
		!strings.Contains(err.Error(), "server_key and server_cert") {
		t.Fatalf("missing key pair: got %v", err)
	}
	notPEM := dir + "/ca.pem"
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadClientCAs(notPEM); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("CA without certificates: got %v", err)
	}
}

func TestListenUnixReplacesAStaleSocketButNoOtherFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "grpc.sock")
	first, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	// A socket left behind by a previous run (as after a crash) is replaced.
	first.(*net.UnixListener).SetUnlinkOnClose(false)
	first.Close()
	second, err := listenUnix(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	second.Close()

	regular := filepath.Join(dir, "data")
	if err := os.WriteFile(regular, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnix(regular); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file must be refused, got %v", err)
	}
	if data, _ := os.ReadFile(regular); string(data) != "keep me" {
		t.Fatal("the regular file was touched")
	}
}
