package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The gRPC port is a frame relay, not an HTTP/2 server and client: each caller's connection gets
// one connection to the model server, and its frames pass with the same stream IDs, settings and
// flow-control windows, so the two ends negotiate with each other as if the gateway were not
// there. Only the request headers of each new stream are decoded, to authenticate and authorize
// the call, and re-encoded without the token. An HTTP/2 server and client in between (net/http's
// ReverseProxy, or grpc-go) decode, copy and re-frame every message twice; at the 1-CPU limit of
// the gateway container that work was most of a call's cost.

const (
	clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	// The largest frame read from a caller. The model server advertises what it accepts (16 KiB
	// for gRPC servers); anything far larger is refused before it is buffered.
	maxRelayFrame = 1 << 20
	// The largest request header block (encoded and decoded), as the REST port's MaxHeaderBytes.
	maxHeaderBlock = 64 << 10
	// Refused streams are remembered until the caller ends them; a caller that opens this many
	// without ending them loses the connection.
	maxRefusedStreams = 1000
	// Header blocks are written to the model server in frames no larger than every peer accepts.
	minMaxFrameSize  = 16 << 10
	defaultTableSize = 4096
	handshakeTimeout = 10 * time.Second
	// A caller that sends nothing for this long loses its connection (net/http's IdleTimeout
	// on the REST port).
	idleTimeout = 5 * time.Minute
)

// errRelayProtocol ends a connection whose caller broke HTTP/2's rules.
var errRelayProtocol = errors.New("http2 protocol error")

// grpcRelay serves the guarded gRPC API.
type grpcRelay struct {
	gateway   *gateway
	upstream  string
	tlsConfig *tls.Config // nil: h2c, as gRPC clients without TLS speak it
	dial      func(ctx context.Context, network, address string) (net.Conn, error)

	mu       sync.Mutex
	conns    map[*relayConn]struct{}
	draining bool
	idle     chan struct{} // closed when draining and the last connection has gone
}

func newGRPCRelay(g *gateway, upstream string, certificate *servingCertificate) *grpcRelay {
	r := &grpcRelay{
		gateway:  g,
		upstream: upstream,
		dial:     (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		conns:    map[*relayConn]struct{}{},
		idle:     make(chan struct{}),
	}
	if certificate != nil {
		r.tlsConfig = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"h2"},
			GetCertificate: certificate.getCertificate,
		}
	}
	return r
}

// serve accepts callers until the listener is closed.
func (r *grpcRelay) serve(listener net.Listener) error {
	for {
		conn, err := listener.Accept()
		if err != nil {
			var transient interface{ Temporary() bool }
			if errors.As(err, &transient) && transient.Temporary() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go r.handle(conn)
	}
}

// shutdown tells every caller to open no new stream (GOAWAY) and waits until the callers have
// finished their calls and closed their connections, or ctx ends; then closes what is left.
func (r *grpcRelay) shutdown(ctx context.Context) {
	r.mu.Lock()
	r.draining = true
	conns := make([]*relayConn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	if len(r.conns) == 0 {
		close(r.idle)
	}
	r.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	select {
	case <-r.idle:
	case <-ctx.Done():
		for _, c := range conns {
			c.close()
		}
	}
}

func (r *grpcRelay) track(c *relayConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.draining {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *grpcRelay) forget(c *relayConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.conns, c)
	if r.draining && len(r.conns) == 0 {
		select {
		case <-r.idle:
		default:
			close(r.idle)
		}
	}
}

func (r *grpcRelay) handle(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if r.tlsConfig != nil {
		secure := tls.Server(conn, r.tlsConfig)
		if err := secure.Handshake(); err != nil || secure.ConnectionState().NegotiatedProtocol != "h2" {
			return
		}
		conn = secure
	}
	clientIn := bufio.NewReaderSize(conn, 32<<10)
	preface := make([]byte, len(clientPreface))
	if _, err := io.ReadFull(clientIn, preface); err != nil || string(preface) != clientPreface {
		return
	}
	_ = conn.SetDeadline(time.Time{})
	c := &relayConn{
		relay:             r,
		client:            conn,
		clientIn:          clientIn,
		toClient:          bufio.NewWriterSize(conn, 32<<10),
		refused:           map[uint32]struct{}{},
		appliedTableLimit: defaultTableSize,
	}
	c.tableLimit.Store(defaultTableSize)
	c.serverPrefaced = make(chan struct{})
	upstream, err := r.dial(context.Background(), "tcp", r.upstream)
	if err != nil {
		c.prefaced()
		c.refuseConnection("the model server is not reachable")
		return
	}
	defer upstream.Close()
	c.upstream = upstream
	c.upstreamIn = bufio.NewReaderSize(upstream, 32<<10)
	c.toUpstream = bufio.NewWriterSize(upstream, 32<<10)
	c.decoder = hpack.NewDecoder(defaultTableSize, c.collectField)
	c.decoder.SetMaxStringLength(maxHeaderBlock)
	c.encoder = hpack.NewEncoder(&c.encoded)
	if !r.track(c) {
		c.prefaced()
		c.refuseConnection("the gateway is shutting down")
		return
	}
	defer r.forget(c)
	// The model server answers the preface with its settings, which must reach the caller
	// before any frame of the gateway's own.
	if _, err := c.toUpstream.WriteString(clientPreface); err != nil || c.toUpstream.Flush() != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.relayResponses()
		c.close()
		c.prefaced()
	}()
	_ = c.relayRequests()
	c.close()
	<-done
}

// relayConn is one caller's connection and its connection to the model server.
type relayConn struct {
	relay            *grpcRelay
	client, upstream net.Conn
	clientIn         *bufio.Reader
	upstreamIn       *bufio.Reader
	closeOnce        sync.Once
	tableLimit       atomic.Uint32 // the model server's SETTINGS_HEADER_TABLE_SIZE
	lastStream       atomic.Uint32 // the highest stream the caller has opened
	goingAway        atomic.Bool

	writeMu  sync.Mutex // guards toClient: responses and the gateway's own frames
	toClient *bufio.Writer
	// Closed once the model server's SETTINGS (the first frame a server sends) has reached the
	// caller: a frame of the gateway's own before it would break the caller's connection.
	serverPrefaced chan struct{}
	prefaceOnce    sync.Once

	// Used by relayRequests only.
	toUpstream        *bufio.Writer
	refused           map[uint32]struct{}
	decoder           *hpack.Decoder
	encoder           *hpack.Encoder
	encoded           bytesBuffer
	appliedTableLimit uint32
	inBlock           bool // a header block is being assembled from HEADERS and CONTINUATION
	block             []byte
	blockStream       uint32
	blockEndsStream   bool
	fields            []hpack.HeaderField
	fieldBytes        int
	idleSince         time.Time
}

// bytesBuffer is the encoder's output, reused for every header block.
type bytesBuffer struct{ b []byte }

func (b *bytesBuffer) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }

func (c *relayConn) close() {
	c.closeOnce.Do(func() {
		_ = c.client.Close()
		if c.upstream != nil {
			_ = c.upstream.Close()
		}
	})
}

// relayRequests passes the caller's frames to the model server until either side ends.
func (c *relayConn) relayRequests() error {
	payload := make([]byte, 0, 16<<10)
	for {
		c.extendIdleDeadline()
		header, err := http2.ReadFrameHeader(c.clientIn)
		if err != nil {
			return err
		}
		if header.Length > maxRelayFrame {
			c.endConnection(http2.ErrCodeFrameSize, "frame too large")
			return errRelayProtocol
		}
		if cap(payload) < int(header.Length) {
			payload = make([]byte, header.Length)
		}
		payload = payload[:header.Length]
		if _, err := io.ReadFull(c.clientIn, payload); err != nil {
			return err
		}
		if err := c.relayRequestFrame(header, payload); err != nil {
			return err
		}
		// Write when the caller has nothing more buffered: one write for what came in one read.
		if c.clientIn.Buffered() == 0 && c.toUpstream.Buffered() > 0 {
			if err := c.toUpstream.Flush(); err != nil {
				return err
			}
		}
	}
}

// extendIdleDeadline moves the caller's read deadline at most once a second: a timer change per
// frame would cost more than the frame.
func (c *relayConn) extendIdleDeadline() {
	if now := time.Now(); now.Sub(c.idleSince) > time.Second {
		c.idleSince = now
		_ = c.client.SetReadDeadline(now.Add(idleTimeout))
	}
}

func (c *relayConn) relayRequestFrame(header http2.FrameHeader, payload []byte) error {
	if c.inBlock && header.Type != http2.FrameContinuation {
		c.endConnection(http2.ErrCodeProtocol, "a frame interrupted a header block")
		return errRelayProtocol
	}
	_, refused := c.refused[header.StreamID]
	switch header.Type {
	case http2.FrameHeaders:
		return c.startHeaderBlock(header, payload)
	case http2.FrameContinuation:
		if !c.inBlock || header.StreamID != c.blockStream {
			c.endConnection(http2.ErrCodeProtocol, "CONTINUATION without HEADERS")
			return errRelayProtocol
		}
		return c.addToHeaderBlock(header.Flags, payload)
	case http2.FramePushPromise:
		c.endConnection(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
		return errRelayProtocol
	case http2.FrameData:
		if refused {
			if header.Flags.Has(http2.FlagDataEndStream) {
				delete(c.refused, header.StreamID)
			}
			// The model server never sees these bytes, so the caller's connection window is
			// given back here or it would shrink with every refused call.
			if header.Length > 0 {
				return c.writeToClient(func(f *http2.Framer) error { return f.WriteWindowUpdate(0, header.Length) })
			}
			return nil
		}
	case http2.FrameRSTStream:
		if refused {
			delete(c.refused, header.StreamID)
			return nil
		}
	case http2.FrameWindowUpdate, http2.FramePriority:
		if refused {
			return nil
		}
	}
	return c.forward(header, payload)
}

// forward writes a frame to the model server as it came.
func (c *relayConn) forward(header http2.FrameHeader, payload []byte) error {
	var raw [9]byte
	putFrameHeader(raw[:], header)
	if _, err := c.toUpstream.Write(raw[:]); err != nil {
		return err
	}
	_, err := c.toUpstream.Write(payload)
	return err
}

func putFrameHeader(b []byte, h http2.FrameHeader) {
	b[0], b[1], b[2] = byte(h.Length>>16), byte(h.Length>>8), byte(h.Length)
	b[3], b[4] = byte(h.Type), byte(h.Flags)
	binary.BigEndian.PutUint32(b[5:], h.StreamID)
}

func (c *relayConn) startHeaderBlock(header http2.FrameHeader, payload []byte) error {
	if header.StreamID == 0 {
		c.endConnection(http2.ErrCodeProtocol, "HEADERS on stream 0")
		return errRelayProtocol
	}
	fragment := payload
	if header.Flags.Has(http2.FlagHeadersPadded) {
		if len(fragment) < 1 || int(fragment[0]) >= len(fragment) {
			c.endConnection(http2.ErrCodeProtocol, "bad padding")
			return errRelayProtocol
		}
		fragment = fragment[1 : len(fragment)-int(fragment[0])]
	}
	if header.Flags.Has(http2.FlagHeadersPriority) {
		if len(fragment) < 5 {
			c.endConnection(http2.ErrCodeProtocol, "bad priority")
			return errRelayProtocol
		}
		fragment = fragment[5:] // priorities are advisory (RFC 9113) and not passed on
	}
	c.inBlock = true
	c.block = append(c.block[:0], fragment...)
	c.blockStream = header.StreamID
	c.blockEndsStream = header.Flags.Has(http2.FlagHeadersEndStream)
	return c.addToHeaderBlock(header.Flags, nil)
}

func (c *relayConn) addToHeaderBlock(flags http2.Flags, fragment []byte) error {
	c.block = append(c.block, fragment...)
	if len(c.block) > maxHeaderBlock {
		c.endConnection(http2.ErrCodeEnhanceYourCalm, "header block too large")
		return errRelayProtocol
	}
	if !flags.Has(http2.FlagHeadersEndHeaders) { // the same bit as CONTINUATION's END_HEADERS
		return nil
	}
	c.inBlock = false
	return c.headerBlock(c.block, c.blockStream, c.blockEndsStream)
}

// headerBlock decides a complete request header block: the first one of a stream opens a call,
// which is authenticated and authorized before anything of it reaches the model server.
func (c *relayConn) headerBlock(block []byte, stream uint32, endsStream bool) error {
	if err := c.decode(block); err != nil {
		c.endConnection(http2.ErrCodeCompression, "header block not decodable")
		return err
	}
	if _, refused := c.refused[stream]; refused {
		if endsStream {
			delete(c.refused, stream)
		}
		return nil
	}
	if stream <= c.lastStream.Load() {
		// Only trailers may follow on a stream the caller has opened; a request (pseudo-header
		// fields) on an old stream ID would reach the model server unchecked.
		for _, f := range c.fields {
			if strings.HasPrefix(f.Name, ":") {
				c.endConnection(http2.ErrCodeProtocol, "request headers on a stream already opened")
				return errRelayProtocol
			}
		}
	} else {
		if stream%2 == 0 {
			c.endConnection(http2.ErrCodeProtocol, "a client stream with an even ID")
			return errRelayProtocol
		}
		c.lastStream.Store(stream)
		if c.goingAway.Load() {
			return c.writeToClient(func(f *http2.Framer) error { return f.WriteRSTStream(stream, http2.ErrCodeRefusedStream) })
		}
		// A review may take a while: what is already relayed should not wait for it.
		if c.toUpstream.Buffered() > 0 {
			if err := c.toUpstream.Flush(); err != nil {
				return err
			}
		}
		if how, message, ok := c.authorize(); !ok {
			return c.refuseStream(stream, endsStream, how, message)
		}
	}
	return c.writeHeaders(stream, endsStream)
}

func (c *relayConn) decode(block []byte) error {
	c.fields, c.fieldBytes = c.fields[:0], 0
	if limit := c.tableLimit.Load(); limit != c.appliedTableLimit {
		// Mirror the model server's decoder: the caller's encoder follows its settings.
		c.decoder.SetAllowedMaxDynamicTableSize(max(limit, defaultTableSize))
		c.encoder.SetMaxDynamicTableSizeLimit(limit)
		c.appliedTableLimit = limit
	}
	if _, err := c.decoder.Write(block); err != nil {
		return err
	}
	if err := c.decoder.Close(); err != nil {
		return err
	}
	if c.fieldBytes > maxHeaderBlock {
		return errors.New("header list too large")
	}
	return nil
}

// collectField keeps one decoded request header field. Indexed fields can expand a small block,
// so the decoded list is bounded as well.
func (c *relayConn) collectField(f hpack.HeaderField) {
	c.fieldBytes += int(f.Size())
	if c.fieldBytes <= maxHeaderBlock {
		c.fields = append(c.fields, f)
	}
}

// authorize decides the call whose request headers were just decoded.
func (c *relayConn) authorize() (refusal, string, bool) {
	g := c.relay.gateway
	var path string
	request := &http.Request{Header: http.Header{}}
	tokens := 0
	for _, f := range c.fields {
		switch f.Name {
		case ":path":
			path = f.Value
		case "authorization":
			request.Header.Set("Authorization", f.Value)
			tokens++
		}
	}
	needed, offered := grpcPermission(path)
	// Authentication comes first so that an anonymous caller learns nothing about which
	// methods exist. Two tokens are refused rather than one of them chosen.
	answer, authenticated, err := g.authn.AuthenticateRequest(request)
	if err != nil || !authenticated || tokens != 1 {
		g.counters.unauthenticated.Add(1)
		return refuseUnauthenticated, unauthenticatedMessage, false
	}
	if !offered {
		g.counters.forbidden.Add(1)
		return refuseForbidden, unknownMessage, false
	}
	switch g.decide(context.Background(), answer.User, needed) {
	case reviewFailed:
		g.counters.reviewFailed.Add(1)
		return refuseUnavailable, reviewFailedMessage, false
	case forbidden:
		g.counters.forbidden.Add(1)
		return refuseForbidden, g.target.deniedMessage(needed), false
	}
	g.counters.allowed.Add(1)
	return refusal{}, "", true
}

// writeHeaders re-encodes the decoded fields for the model server, without the token, in frames
// every HTTP/2 peer accepts.
func (c *relayConn) writeHeaders(stream uint32, endsStream bool) error {
	c.encoded.b = c.encoded.b[:0]
	for _, f := range c.fields {
		if f.Name == "authorization" {
			continue
		}
		if err := c.encoder.WriteField(f); err != nil {
			return err
		}
	}
	block := c.encoded.b
	first := true
	for first || len(block) > 0 {
		n := min(len(block), minMaxFrameSize)
		header := http2.FrameHeader{Length: uint32(n), StreamID: stream, Type: http2.FrameContinuation}
		if first {
			header.Type = http2.FrameHeaders
			if endsStream {
				header.Flags |= http2.FlagHeadersEndStream
			}
		}
		if n == len(block) {
			header.Flags |= http2.FlagHeadersEndHeaders
		}
		if err := c.forward(header, block[:n]); err != nil {
			return err
		}
		block, first = block[n:], false
	}
	return nil
}

// refuseStream answers a call the gateway will not forward with a gRPC status (a trailers-only
// response). Its fields are never indexed, so the caller's HPACK table stays the one the model
// server's encoder expects.
func (c *relayConn) refuseStream(stream uint32, endsStream bool, how refusal, message string) error {
	if !endsStream {
		if len(c.refused) >= maxRefusedStreams {
			c.endConnection(http2.ErrCodeEnhanceYourCalm, "too many refused streams left open")
			return errRelayProtocol
		}
		c.refused[stream] = struct{}{}
	}
	var block bytesBuffer
	encoder := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{
		{Name: ":status", Value: "200"},
		{Name: "content-type", Value: "application/grpc"},
		{Name: "grpc-status", Value: strconv.Itoa(how.grpcCode)},
		{Name: "grpc-message", Value: encodeGrpcMessage(message)},
	} {
		f.Sensitive = true
		_ = encoder.WriteField(f)
	}
	return c.writeToClient(func(f *http2.Framer) error {
		return f.WriteHeaders(http2.HeadersFrameParam{
			StreamID: stream, BlockFragment: block.b, EndStream: true, EndHeaders: true,
		})
	})
}

func (c *relayConn) prefaced() {
	c.prefaceOnce.Do(func() { close(c.serverPrefaced) })
}

// writeToClient writes one frame of the gateway's own to the caller, between response frames.
func (c *relayConn) writeToClient(write func(*http2.Framer) error) error {
	select {
	case <-c.serverPrefaced:
	case <-time.After(handshakeTimeout):
		c.close()
		return errors.New("the model server sent no settings")
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if err := write(http2.NewFramer(c.toClient, nil)); err != nil {
		return err
	}
	return c.toClient.Flush()
}

// endConnection tells the caller why its connection ends; the reason names no caller input.
func (c *relayConn) endConnection(code http2.ErrCode, reason string) {
	_ = c.writeToClient(func(f *http2.Framer) error {
		return f.WriteGoAway(c.lastStream.Load(), code, []byte("access gateway: "+reason))
	})
}

// goAway asks the caller to open no new stream; the calls it has started go on.
func (c *relayConn) goAway() {
	c.goingAway.Store(true)
	_ = c.writeToClient(func(f *http2.Framer) error {
		return f.WriteGoAway(c.lastStream.Load(), http2.ErrCodeNo, nil)
	})
}

// refuseConnection answers a caller whose calls cannot be forwarded at all: an HTTP/2 server's
// settings, then GOAWAY, which gRPC clients report as UNAVAILABLE.
func (c *relayConn) refuseConnection(reason string) {
	_ = c.writeToClient(func(f *http2.Framer) error {
		if err := f.WriteSettings(); err != nil {
			return err
		}
		return f.WriteGoAway(0, http2.ErrCodeNo, []byte(reason))
	})
}

// relayResponses passes the model server's frames to the caller as they come.
func (c *relayConn) relayResponses() {
	payload := make([]byte, 0, 16<<10)
	var raw [9]byte
	for {
		header, err := http2.ReadFrameHeader(c.upstreamIn)
		if err != nil || header.Length > maxRelayFrame {
			return
		}
		if cap(payload) < int(header.Length) {
			payload = make([]byte, header.Length)
		}
		payload = payload[:header.Length]
		if _, err := io.ReadFull(c.upstreamIn, payload); err != nil {
			return
		}
		if header.Type == http2.FrameSettings && !header.Flags.Has(http2.FlagSettingsAck) {
			c.noteSettings(payload)
		}
		putFrameHeader(raw[:], header)
		c.writeMu.Lock()
		_, err = c.toClient.Write(raw[:])
		if err == nil {
			_, err = c.toClient.Write(payload)
		}
		if err == nil && c.upstreamIn.Buffered() == 0 {
			err = c.toClient.Flush()
		}
		c.writeMu.Unlock()
		if err != nil {
			return
		}
		c.prefaced()
	}
}

// noteSettings keeps the model server's header table size, which the caller's encoder obeys.
func (c *relayConn) noteSettings(payload []byte) {
	for len(payload) >= 6 {
		id, value := http2.SettingID(binary.BigEndian.Uint16(payload)), binary.BigEndian.Uint32(payload[2:])
		if id == http2.SettingHeaderTableSize {
			c.tableLimit.Store(min(value, maxHeaderBlock))
		}
		payload = payload[6:]
	}
}
