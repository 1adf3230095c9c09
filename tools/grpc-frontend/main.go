// Command grpc-frontend is the native gRPC front end of `tfmaas serve`.
//
// Python's gRPC server costs about 0.3 ms of one thread per call before any model work, and that
// thread is the one holding the GIL, so it caps both the latency of a lone request and what
// server-side batching can gain. This program terminates the HTTP/2 connections instead and relays
// every unary call, as the raw bytes of its request message, to the model server over a Unix
// socket. The model server keeps all the serving logic (models, labels, batching, metrics, status
// codes); this side only moves bytes, and it coalesces many calls into one socket write each way.
//
// Frames on the socket, all integers little-endian:
//
//	call     (front end -> server): u32 size | u64 id | u16 method length | method | request
//	cancel   (front end -> server): u32 size | u64 id | u16 0              (the caller went away)
//	answer   (server -> front end): u32 size | u64 id | u8 status code | response or message
//
// size counts the bytes after itself. The front end prints "listening PORT" once it accepts
// connections, and exits when the server closes the socket.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

const ioBufferBytes = 1 << 20

// soReusePort is SO_REUSEPORT on Linux, which package syscall does not name.
const soReusePort = 0xf

// rawCodec hands message bytes through untouched: the model server parses them.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	message, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return *message, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	message, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	// gRPC may reuse data's buffer once this returns.
	*message = append((*message)[:0], data...)
	return nil
}

type answer struct {
	code    codes.Code
	payload []byte
}

// relay multiplexes calls over one socket to the model server.
type relay struct {
	conn net.Conn
	// Callers write their own frames; the last of a burst flushes them all in one write.
	writeMu sync.Mutex
	out     *bufio.Writer
	writers atomic.Int32
	nextID  atomic.Uint64
	mu      sync.Mutex
	pending map[uint64]chan answer
	closed  chan struct{}
	// The reader and any caller's write may fail at once; closed is closed once.
	closeOnce sync.Once
}

func newRelay(conn net.Conn) *relay {
	r := &relay{
		conn:    conn,
		out:     bufio.NewWriterSize(conn, ioBufferBytes),
		pending: make(map[uint64]chan answer),
		closed:  make(chan struct{}),
	}
	go r.readLoop()
	return r
}

// send writes a frame and flushes unless another caller is already waiting to write: a lone call
// goes out at once without a hand-off to another goroutine, and a burst of calls costs one write.
func (r *relay) send(frame []byte) error {
	r.writers.Add(1)
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	_, err := r.out.Write(frame)
	if r.writers.Add(-1) == 0 && err == nil {
		err = r.out.Flush()
	}
	if err != nil {
		r.fail(err)
	}
	return err
}

func (r *relay) readLoop() {
	in := bufio.NewReaderSize(r.conn, ioBufferBytes)
	var header [13]byte
	for {
		if _, err := io.ReadFull(in, header[:]); err != nil {
			r.fail(err)
			return
		}
		size := binary.LittleEndian.Uint32(header[0:4])
		if size < 9 {
			r.fail(fmt.Errorf("answer frame of %d bytes is too short", size))
			return
		}
		id := binary.LittleEndian.Uint64(header[4:12])
		payload := make([]byte, size-9)
		if _, err := io.ReadFull(in, payload); err != nil {
			r.fail(err)
			return
		}
		r.mu.Lock()
		waiter, ok := r.pending[id]
		delete(r.pending, id)
		r.mu.Unlock()
		if ok {
			waiter <- answer{code: codes.Code(header[12]), payload: payload}
		}
	}
}

func (r *relay) fail(err error) {
	r.closeOnce.Do(func() {
		if !errors.Is(err, io.EOF) {
			log.Printf("model server socket: %v", err)
		}
		close(r.closed)
	})
}

func (r *relay) forget(id uint64) {
	r.mu.Lock()
	delete(r.pending, id)
	r.mu.Unlock()
}

func callFrame(id uint64, method string, request []byte) []byte {
	frame := make([]byte, 14, 14+len(method)+len(request))
	binary.LittleEndian.PutUint32(frame[0:4], uint32(10+len(method)+len(request)))
	binary.LittleEndian.PutUint64(frame[4:12], id)
	binary.LittleEndian.PutUint16(frame[12:14], uint16(len(method)))
	frame = append(frame, method...)
	return append(frame, request...)
}

func (r *relay) call(ctx context.Context, method string, request []byte) (answer, error) {
	id := r.nextID.Add(1)
	waiter := make(chan answer, 1)
	r.mu.Lock()
	r.pending[id] = waiter
	r.mu.Unlock()
	if r.send(callFrame(id, method, request)) != nil {
		r.forget(id)
		return answer{}, status.Error(codes.Unavailable, "the model server is gone")
	}
	select {
	case got := <-waiter:
		return got, nil
	case <-ctx.Done():
		r.forget(id)
		_ = r.send(callFrame(id, "", nil)) // so the server counts it CANCELLED
		return answer{}, status.FromContextError(ctx.Err()).Err()
	case <-r.closed:
		return answer{}, status.Error(codes.Unavailable, "the model server is gone")
	}
}

// streamingMethods have no single answer to relay.
var streamingMethods = map[string]bool{"/grpc.health.v1.Health/Watch": true}

func (r *relay) handle(_ any, stream grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(stream)
	if !ok || method == "" {
		return status.Error(codes.Internal, "no method name on the stream")
	}
	if streamingMethods[method] {
		return status.Errorf(codes.Unimplemented, "%s is not served; poll Check instead", method)
	}
	var request []byte
	if err := stream.RecvMsg(&request); err != nil {
		return err
	}
	got, err := r.call(stream.Context(), method, request)
	if err != nil {
		return err
	}
	if got.code != codes.OK {
		return status.Error(got.code, string(got.payload))
	}
	return stream.SendMsg(&got.payload)
}

// channelArgs holds `-arg key=value` flags: TF Serving's --grpc_channel_arguments, with the
// gRPC core names, as far as grpc-go has the same knob. The model server adds its defaults for
// the ones it decides for both front ends (message sizes, grpc.max_concurrent_streams).
type channelArgs map[string]string

func (c channelArgs) String() string { return fmt.Sprint(map[string]string(c)) }

func (c channelArgs) Set(text string) error {
	key, value, ok := strings.Cut(text, "=")
	if !ok || key == "" {
		return fmt.Errorf("%q is not key=value", text)
	}
	c[strings.TrimSpace(key)] = strings.TrimSpace(value)
	return nil
}

type serverSettings struct {
	options   []grpc.ServerOption
	reusePort bool
}

func settingsFrom(args channelArgs) serverSettings {
	var settings serverSettings
	keepalive := keepalive.ServerParameters{}
	useKeepalive := false
	for key, value := range args {
		number, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			log.Printf("ignoring channel argument %s=%s: not a number", key, value)
			continue
		}
		millis := time.Duration(number) * time.Millisecond
		switch key {
		case "grpc.max_receive_message_length":
			settings.options = append(settings.options, grpc.MaxRecvMsgSize(int(number)))
		case "grpc.max_send_message_length":
			settings.options = append(settings.options, grpc.MaxSendMsgSize(int(number)))
		case "grpc.max_concurrent_streams":
			settings.options = append(settings.options, grpc.MaxConcurrentStreams(uint32(number)))
		case "grpc.so_reuseport":
			settings.reusePort = number != 0
		case "grpc.max_connection_age_ms":
			keepalive.MaxConnectionAge, useKeepalive = millis, true
		case "grpc.max_connection_age_grace_ms":
			keepalive.MaxConnectionAgeGrace, useKeepalive = millis, true
		case "grpc.max_connection_idle_ms":
			keepalive.MaxConnectionIdle, useKeepalive = millis, true
		case "grpc.keepalive_time_ms":
			keepalive.Time, useKeepalive = millis, true
		case "grpc.keepalive_timeout_ms":
			keepalive.Timeout, useKeepalive = millis, true
		default:
			log.Printf("ignoring channel argument %s: the native front end has no such setting", key)
		}
	}
	if useKeepalive {
		settings.options = append(settings.options, grpc.KeepaliveParams(keepalive))
	}
	return settings
}

func listen(address string, reusePort bool) (net.Listener, error) {
	config := net.ListenConfig{}
	if reusePort {
		config.Control = func(_, _ string, raw syscall.RawConn) error {
			var optErr error
			err := raw.Control(func(fd uintptr) {
				optErr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
			})
			if err != nil {
				return err
			}
			return optErr
		}
	}
	return config.Listen(context.Background(), "tcp", address)
}

// listenUnix listens on a Unix socket at path, replacing a socket a previous run left there (as
// gRPC's C++ server does) but never any other kind of file.
func listenUnix(path string) (net.Listener, error) {
	if info, err := os.Lstat(path); err == nil {
		if info.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("--grpc_socket_path %s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("--grpc_socket_path %s: %w", path, err)
		}
	}
	listener, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on --grpc_socket_path %s: %w", path, err)
	}
	return listener, nil
}

// tlsConfig is what TF Serving builds from its SSLConfig: the server's key pair, and client
// certificates required and verified against caFile only with clientVerify.
func tlsConfig(certFile, keyFile, caFile string, clientVerify bool) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("SSL config: server_key and server_cert: %w", err)
	}
	config := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadClientCAs(caFile)
		if err != nil {
			return nil, err
		}
		config.ClientCAs = pool
	}
	if clientVerify {
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return config, nil
}

func loadClientCAs(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("SSL config: custom_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("SSL config: custom_ca holds no PEM certificate")
	}
	return pool, nil
}

func main() {
	address := flag.String("listen", "0.0.0.0:8500", "host:port for gRPC")
	unixPath := flag.String("listen_unix", "", "also serve gRPC on this Unix socket path (TF Serving's --grpc_socket_path)")
	backend := flag.String("backend", "", "Unix socket of the model server")
	args := channelArgs{}
	flag.Var(args, "arg", "a gRPC channel argument, key=value (repeatable)")
	grace := flag.Duration("grace", 30*time.Second, "how long calls in flight may finish on SIGTERM")
	tlsCert := flag.String("tls_cert", "", "PEM file of the server certificate: TLS on -listen")
	tlsKey := flag.String("tls_key", "", "PEM file of the server key (with -tls_cert)")
	tlsCA := flag.String("tls_ca", "", "PEM file of the CA that client certificates are checked against")
	tlsClientVerify := flag.Bool("tls_client_verify", false, "require a client certificate signed by -tls_ca")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("grpc-frontend: ")
	if *backend == "" {
		log.Fatal("-backend is required: the model server's Unix socket")
	}

	conn, err := net.Dial("unix", *backend)
	if err != nil {
		log.Fatalf("cannot reach the model server at %s: %v", *backend, err)
	}
	relay := newRelay(conn)

	settings := settingsFrom(args)
	if *tlsCert != "" {
		config, err := tlsConfig(*tlsCert, *tlsKey, *tlsCA, *tlsClientVerify)
		if err != nil {
			log.Fatal(err)
		}
		settings.options = append(settings.options, grpc.Creds(credentials.NewTLS(config)))
	}
	listener, err := listen(*address, settings.reusePort)
	if err != nil {
		log.Fatal(err) // the model server says which address and what for
	}
	var unixListener net.Listener
	if *unixPath != "" {
		unixListener, err = listenUnix(*unixPath)
		if err != nil {
			log.Fatal(err)
		}
	}
	server := grpc.NewServer(append(
		settings.options,
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(relay.handle),
	)...)
	fmt.Printf("listening %d\n", listener.Addr().(*net.TCPAddr).Port)
	os.Stdout.Sync()

	go func() {
		signals := make(chan os.Signal, 1)
		signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
		select {
		case <-signals:
			// Stop taking calls and let those in flight finish, as a pod being replaced must.
			done := make(chan struct{})
			go func() { server.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(*grace):
			case <-relay.closed:
			}
		case <-relay.closed:
		}
		server.Stop()
	}()
	if unixListener != nil {
		go func() {
			if err := server.Serve(unixListener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				log.Fatalf("serving gRPC on %s: %v", *unixPath, err)
			}
		}()
	}
	if err := server.Serve(listener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		log.Fatalf("serving gRPC: %v", err)
	}
}
