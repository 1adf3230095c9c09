package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	predictMethod = "/tensorflow.serving.PredictionService/Predict"
	statusMethod  = "/tensorflow.serving.ModelService/GetModelStatus"
)

// modelServer stands in for TF Serving's gRPC port: it echoes each call's message and keeps the
// request headers it was sent.
type modelServer struct {
	address string
	mu      sync.Mutex
	seen    []http.Header
}

func (m *modelServer) calls() []http.Header {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]http.Header(nil), m.seen...)
}

func startModelServer(t testing.TB) *modelServer {
	m := &modelServer{}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	server := &http.Server{Protocols: &protocols, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.seen = append(m.seen, r.Header.Clone())
		m.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		_, _ = w.Write(body)
		w.Header().Set("Grpc-Status", "0")
	})}
	go func() { _ = server.Serve(listener) }()
	t.Cleanup(func() { _ = server.Close() })
	m.address = listener.Addr().String()
	return m
}

func startRelay(t testing.TB, g *gateway, upstream string) (*grpcRelay, string) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	relay := newGRPCRelay(g, upstream, nil)
	go func() { _ = relay.serve(listener) }()
	t.Cleanup(func() { _ = listener.Close() })
	return relay, listener.Addr().String()
}

// h2cClient speaks HTTP/2 without TLS, as gRPC clients do on a plain channel.
func h2cClient() *http.Client {
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &protocols}, Timeout: 10 * time.Second}
}

// grpcCall makes one unary call and returns its grpc-status and grpc-message.
func grpcCall(t testing.TB, client *http.Client, address, method, token string, body []byte) (string, string) {
	request, _ := http.NewRequest("POST", "http://"+address+method, bytes.NewReader(body))
	request.Header.Set("Content-Type", "application/grpc")
	request.Header.Set("Te", "trailers")
	if token != "" {
		request.Header.Set("Authorization", "Bearer "+token)
	}
	response, err := client.Do(request)
	if err != nil {
		t.Fatal(err)
	}
	defer response.Body.Close()
	echoed, _ := io.ReadAll(response.Body)
	status, message := response.Header.Get("Grpc-Status"), response.Header.Get("Grpc-Message")
	if status == "" { // not trailers-only: the status comes after the message
		status, message = response.Trailer.Get("Grpc-Status"), response.Trailer.Get("Grpc-Message")
		if !bytes.Equal(echoed, body) {
			t.Errorf("%s: the message came back changed", method)
		}
	}
	return status, message
}

func TestRelayRefusalsAreRealStatusesAndNothingReachesTheModel(t *testing.T) {
	for _, c := range []struct {
		name, token, method, wantStatus, wantMessage string
	}{
		{"sentiment", "", predictMethod, "16", "unauthenticated"},
		{"sentiment", "bad", predictMethod, "16", "unauthenticated"},
		{"sentiment", "good", predictMethod, "7", "modelservices/predict"},
		{"sentiment", "good", "/tensorflow.serving.ModelService/HandleReloadConfigRequest", "7", "not offered"},
		{"broken", "good", statusMethod, "14", "did not answer"},
	} {
		g, _ := newTestGateway(c.name)
		model := startModelServer(t)
		_, address := startRelay(t, g, model.address)
		status, message := grpcCall(t, h2cClient(), address, c.method, c.token, []byte("x"))
		if status != c.wantStatus || !strings.Contains(message, c.wantMessage) {
			t.Errorf("%s %q %s: %s %q", c.name, c.token, c.method, status, message)
		}
		if calls := model.calls(); len(calls) != 0 {
			t.Errorf("%s reached the model server", c.method)
		}
	}
}

func TestRelayForwardsAnAllowedCallWithoutItsToken(t *testing.T) {
	g, authz := newTestGateway("sentiment")
	model := startModelServer(t)
	_, address := startRelay(t, g, model.address)
	client := h2cClient()
	for range 3 { // on one connection: the HPACK tables of both hops stay in step
		if status, message := grpcCall(t, client, address, statusMethod, "good", bytes.Repeat([]byte("m"), 40000)); status != "0" {
			t.Fatalf("allowed call: %s %q", status, message)
		}
	}
	calls := model.calls()
	if len(calls) != 3 || calls[0].Get("Authorization") != "" || calls[0].Get("Content-Type") != "application/grpc" {
		t.Errorf("forwarded headers: %v", calls)
	}
	last := authz.seen[len(authz.seen)-1]
	if last.GetVerb() != "get" || last.GetName() != "sentiment" || last.GetResource() != "modelservices" {
		t.Errorf("review attributes: %+v", last)
	}
	if g.counters.allowed.Load() != 3 {
		t.Errorf("allowed counter: %d", g.counters.allowed.Load())
	}
}

// rawClient writes HTTP/2 frames by hand, as a hostile caller would.
type rawClient struct {
	t       testing.TB
	conn    net.Conn
	framer  *http2.Framer
	block   bytes.Buffer
	encoder *hpack.Encoder
}

func dialRaw(t testing.TB, address string) *rawClient {
	conn, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c := &rawClient{t: t, conn: conn, framer: http2.NewFramer(conn, conn)}
	c.framer.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.encoder = hpack.NewEncoder(&c.block)
	_, _ = io.WriteString(conn, clientPreface)
	if err := c.framer.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *rawClient) headerBlock(fields ...string) []byte {
	c.block.Reset()
	for i := 0; i < len(fields); i += 2 {
		_ = c.encoder.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return append([]byte(nil), c.block.Bytes()...)
}

func (c *rawClient) request(stream uint32, method, token string, endStream bool) {
	fields := []string{":method", "POST", ":scheme", "http", ":path", method, ":authority", "model",
		"content-type", "application/grpc", "te", "trailers"}
	if token != "" {
		fields = append(fields, "authorization", "Bearer "+token)
	}
	err := c.framer.WriteHeaders(http2.HeadersFrameParam{
		StreamID: stream, BlockFragment: c.headerBlock(fields...), EndHeaders: true, EndStream: endStream,
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next frame for which keep says true, acknowledging settings on the way.
func (c *rawClient) next(keep func(http2.Frame) bool) http2.Frame {
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		frame, err := c.framer.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading: %v", err)
		}
		if s, ok := frame.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = c.framer.WriteSettingsAck()
		}
		if keep(frame) {
			return frame
		}
	}
}

func (c *rawClient) goAway() *http2.GoAwayFrame {
	return c.next(func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
}

// field is the value of a regular header field of a decoded HEADERS frame.
func field(h *http2.MetaHeadersFrame, name string) string {
	for _, f := range h.RegularFields() {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

func statusOf(f http2.Frame) string {
	if h, ok := f.(*http2.MetaHeadersFrame); ok {
		return h.PseudoValue("status") + " grpc-status=" + field(h, "grpc-status")
	}
	return ""
}

// hostileCaller is a raw HTTP/2 connection to a relay (guarding "sentiment") in front of a
// model server.
func hostileCaller(t *testing.T) (*modelServer, *grpcRelay, *rawClient) {
	g, _ := newTestGateway("sentiment")
	model := startModelServer(t)
	relay, address := startRelay(t, g, model.address)
	return model, relay, dialRaw(t, address)
}

func TestRefusedCallsBodiesDoNotStarveTheConnection(t *testing.T) {
	model, _, c := hostileCaller(t)
	chunk := make([]byte, 16<<10)
	// 200 refused calls with 64 KiB each: 12.5 MiB, far past any connection window, that the
	// model server never sees and so never gives back.
	stream := uint32(1)
	for ; stream < 400; stream += 2 {
		c.request(stream, predictMethod, "good", false)
		for i := range 4 {
			if err := c.framer.WriteData(stream, i == 3, chunk); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.request(stream, statusMethod, "good", false)
	_ = c.framer.WriteData(stream, true, []byte{0, 0, 0, 0, 0})
	returned := 0
	answer := c.next(func(f http2.Frame) bool {
		if w, ok := f.(*http2.WindowUpdateFrame); ok && w.StreamID == 0 {
			returned += int(w.Increment)
		}
		return f.Header().StreamID == stream && f.Header().Type == http2.FrameHeaders
	})
	// A caller that keeps to its window (every real client) could not have sent a byte more
	// than this without the gateway giving the dropped bytes back.
	if refusedBytes := 200 * 4 * len(chunk); returned < refusedBytes {
		t.Errorf("%d bytes of the connection window given back for %d dropped", returned, refusedBytes)
	}
	if got := statusOf(answer); got != "200 grpc-status=" {
		t.Errorf("the allowed call after refused ones: %s", got)
	}
	if calls := model.calls(); len(calls) != 1 {
		t.Errorf("%d calls reached the model server, want 1", len(calls))
	}
}

func TestARequestOnAnOldStreamEndsTheConnection(t *testing.T) {
	model, _, c := hostileCaller(t)
	c.request(5, statusMethod, "good", true)
	c.next(func(f http2.Frame) bool { return f.Header().StreamID == 5 })
	// Stream 3 was never opened and is now closed: a request there must not pass unchecked.
	c.request(3, predictMethod, "", true)
	// The gateway's own GOAWAY, not the model server's (which would refuse it too).
	if away := c.goAway(); away.ErrCode != http2.ErrCodeProtocol || !strings.Contains(string(away.DebugData()), "access gateway") {
		t.Errorf("GOAWAY %v %q", away.ErrCode, away.DebugData())
	}
	if calls := model.calls(); len(calls) != 1 {
		t.Errorf("%d calls reached the model server, want 1", len(calls))
	}
}

func TestAnEndlessHeaderBlockEndsTheConnection(t *testing.T) {
	_, _, c := hostileCaller(t)
	block := c.headerBlock(":method", "POST", ":path", predictMethod, "x-pad", strings.Repeat("a", 8000))
	_ = c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block})
	for range 20 { // CONTINUATION frames without END_HEADERS: 160 KB and counting
		if err := c.framer.WriteContinuation(1, false, block); err != nil {
			break
		}
	}
	if away := c.goAway(); away.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v", away.ErrCode)
	}
}

func TestExpandingHeaderReferencesAreBounded(t *testing.T) {
	model, _, c := hostileCaller(t)
	// One 4 KB field in the dynamic table, then thousands of one-byte references to it.
	first := c.headerBlock(":method", "POST", ":path", statusMethod, "x-big", strings.Repeat("b", 4000))
	c.block.Reset()
	for range 5000 {
		_ = c.encoder.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("b", 4000)})
	}
	block := append(first, c.block.Bytes()...)
	_ = c.framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:4000]})
	for rest := block[4000:]; len(rest) > 0; {
		n := min(len(rest), 16000)
		_ = c.framer.WriteContinuation(1, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	if away := c.goAway(); away.ErrCode != http2.ErrCodeCompression {
		t.Errorf("GOAWAY %v", away.ErrCode)
	}
	if calls := model.calls(); len(calls) != 0 {
		t.Errorf("%d calls reached the model server", len(calls))
	}
}

func TestShutdownLetsStartedCallsFinishAndRefusesNewStreams(t *testing.T) {
	_, relay, c := hostileCaller(t)
	c.request(1, statusMethod, "good", false) // started, its message not sent yet
	c.next(func(f http2.Frame) bool { _, ok := f.(*http2.SettingsFrame); return ok })
	time.Sleep(100 * time.Millisecond)
	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		relay.shutdown(ctx)
		close(stopped)
	}()
	if away := c.goAway(); away.ErrCode != http2.ErrCodeNo || away.LastStreamID != 1 {
		t.Errorf("GOAWAY %v last %d", away.ErrCode, away.LastStreamID)
	}
	c.request(3, statusMethod, "good", true)
	reset := c.next(func(f http2.Frame) bool { return f.Header().StreamID == 3 })
	if r, ok := reset.(*http2.RSTStreamFrame); !ok || r.ErrCode != http2.ErrCodeRefusedStream {
		t.Errorf("a stream after GOAWAY: %v", reset)
	}
	_ = c.framer.WriteData(1, true, []byte{0, 0, 0, 0, 0})
	trailers := c.next(func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 1 && h.StreamEnded()
	})
	if got := field(trailers.(*http2.MetaHeadersFrame), "grpc-status"); got != "0" {
		t.Errorf("the started call ended with grpc-status %q", got)
	}
	select {
	case <-stopped:
		t.Error("shutdown returned while the caller was still connected")
	default:
	}
	_ = c.conn.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Error("shutdown did not return after the caller left")
	}
}
