package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

func TestRESTPermissions(t *testing.T) {
	cases := []struct {
		method, path string
		want         permission
		offered      bool
	}{
		{"POST", "/v1/models/sentiment:predict", callModel, true},
		{"POST", "/v1/models/sentiment/versions/3:classify", callModel, true},
		{"POST", "/v1/models/sentiment/labels/stable:regress", callModel, true},
		{"GET", "/v1/models/sentiment", readModel, true},
		{"GET", "/v1/models/sentiment/versions/2", readModel, true},
		{"GET", "/v1/models/sentiment/metadata", readModel, true},
		{"GET", "/v1/models/sentiment/labels/stable/metadata", readModel, true},
		{"GET", "/v1/models/sentiment:predict", permission{}, false},
		{"POST", "/v1/models/sentiment", permission{}, false},
		{"POST", "/v1/models/sentiment:reload", permission{}, false},
		{"GET", "/monitoring/prometheus/metrics", permission{}, false},
		{"GET", "/v1/models/a/../../etc", permission{}, false},
		{"DELETE", "/v1/models/sentiment", permission{}, false},
	}
	for _, c := range cases {
		got, offered := restPermission(c.method, c.path)
		if got != c.want || offered != c.offered {
			t.Errorf("%s %s: got %v %v, want %v %v", c.method, c.path, got, offered, c.want, c.offered)
		}
	}
}

func TestGRPCPermissions(t *testing.T) {
	for method, want := range map[string]permission{
		"/tensorflow.serving.PredictionService/Predict":          callModel,
		"/tensorflow.serving.PredictionService/MultiInference":   callModel,
		"/tensorflow.serving.PredictionService/GetModelMetadata": readModel,
		"/tensorflow.serving.ModelService/GetModelStatus":        readModel,
	} {
		if got, ok := grpcPermission(method); !ok || got != want {
			t.Errorf("%s: got %v %v", method, got, ok)
		}
	}
	for _, method := range []string{
		"/tensorflow.serving.ModelService/HandleReloadConfigRequest",
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
		"/tensorflow.serving.PredictionService/predict",
	} {
		if _, ok := grpcPermission(method); ok {
			t.Errorf("%s must be refused", method)
		}
	}
}

func TestDeniedMessageNamesTheMissingPermission(t *testing.T) {
	message := target{namespace: "default", modelService: "sentiment"}.deniedMessage(callModel)
	for _, part := range []string{`"create"`, `"modelservices/predict"`, `"sentiment"`, `"default"`, `"tfmaas.io"`} {
		if !strings.Contains(message, part) {
			t.Errorf("%q does not name %s", message, part)
		}
	}
}

func TestEncodeGrpcMessage(t *testing.T) {
	if got := encodeGrpcMessage("a 100% \"x\"\n\u00e9"); got != `a 100%25 "x"%0A%C3%A9` {
		t.Errorf("got %q", got)
	}
}

// fakeAuthn accepts the token "good" as alice; any other token is an error, none is no answer.
var fakeAuthn = authenticator.RequestFunc(func(r *http.Request) (*authenticator.Response, bool, error) {
	header := r.Header.Get("Authorization")
	switch header {
	case "":
		return nil, false, nil
	case "Bearer good":
		r.Header.Del("Authorization")
		return &authenticator.Response{User: &user.DefaultInfo{Name: "alice"}}, true, nil
	}
	return nil, false, errors.New("invalid bearer token")
})

// fakeAuthz lets alice read but not call; a review for "broken" fails as an unreachable API would.
type fakeAuthz struct{ seen []authorizer.Attributes }

func (f *fakeAuthz) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	f.seen = append(f.seen, a)
	if a.GetName() == "broken" {
		return authorizer.DecisionNoOpinion, "", errors.New("connection refused")
	}
	if a.GetVerb() == "get" && a.GetUser().GetName() == "alice" {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, "no RBAC rule", nil
}

func newTestGateway(name string) (*gateway, *fakeAuthz) {
	authz := &fakeAuthz{}
	return &gateway{
		authn:    fakeAuthn,
		authz:    authz,
		target:   target{namespace: "default", modelService: name},
		counters: &counters{},
	}, authz
}

func TestRESTRefusalsAndForwarding(t *testing.T) {
	g, authz := newTestGateway("sentiment")
	var forwarded []http.Header
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded = append(forwarded, r.Header.Clone())
		_, _ = io.WriteString(w, `{"model_version_status": []}`)
	}))
	defer upstream.Close()
	upstreamURL, _ := url.Parse(upstream.URL)
	front := httptest.NewServer(g.guard(newProxy(upstreamURL, restTransport())))
	defer front.Close()

	call := func(method, path, token string) (int, string) {
		request, _ := http.NewRequest(method, front.URL+path, strings.NewReader("{}"))
		if token != "" {
			request.Header.Set("Authorization", "Bearer "+token)
		}
		response, err := http.DefaultClient.Do(request)
		if err != nil {
			t.Fatal(err)
		}
		defer response.Body.Close()
		body, _ := io.ReadAll(response.Body)
		return response.StatusCode, string(body)
	}
	if status, _ := call("GET", "/v1/models/sentiment", ""); status != 401 {
		t.Errorf("no token: %d", status)
	}
	if status, _ := call("GET", "/v1/models/sentiment", "bad"); status != 401 {
		t.Errorf("bad token: %d", status)
	}
	status, body := call("POST", "/v1/models/sentiment:predict", "good")
	if status != 403 || !strings.Contains(body, `\"modelservices/predict\"`) {
		t.Errorf("predict without the rule: %d %s", status, body)
	}
	if status, body := call("GET", "/v1/models/sentiment/metadata", "good"); status != 200 {
		t.Errorf("allowed read: %d %s", status, body)
	}
	if status, _ := call("POST", "/v1/models/sentiment:reload", "good"); status != 403 {
		t.Errorf("unknown path: %d", status)
	}
	if len(forwarded) != 1 || forwarded[0].Get("Authorization") != "" {
		t.Errorf("exactly the allowed call is forwarded, without its token: %v", forwarded)
	}
	last := authz.seen[len(authz.seen)-1]
	if last.GetAPIGroup() != "tfmaas.io" || last.GetResource() != "modelservices" || last.GetNamespace() != "default" ||
		last.GetName() != "sentiment" || !last.IsResourceRequest() {
		t.Errorf("review attributes: %+v", last)
	}
	if g.counters.allowed.Load() != 1 || g.counters.unauthenticated.Load() != 2 || g.counters.forbidden.Load() != 2 {
		t.Errorf("counters: %d %d %d", g.counters.allowed.Load(), g.counters.unauthenticated.Load(), g.counters.forbidden.Load())
	}
}

func TestFlags(t *testing.T) {
	if _, err := parseFlags([]string{"--namespace=default"}); err == nil {
		t.Error("--model-service is required")
	}
	if _, err := parseFlags([]string{"--namespace=d", "--model-service=m", "--tls-cert-file=a"}); err == nil {
		t.Error("a certificate without its key is refused")
	}
	o, err := parseFlags([]string{"--namespace=d", "--model-service=m", "--authorization-allow-cache-ttl=2s"})
	if err != nil || o.allowCacheTTL.Seconds() != 2 {
		t.Errorf("%v %v", o, err)
	}
}

// selfSigned returns a PEM certificate and key for commonName.
func selfSigned(t *testing.T, commonName string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: commonName},
		DNSNames:     []string{commonName},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// writePair swaps both files in by rename, as the kubelet swaps a Secret volume's files.
func writePair(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		partial := filepath.Join(dir, "."+name)
		if err := os.WriteFile(partial, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(partial, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func servedName(t *testing.T, s *servingCertificate) string {
	t.Helper()
	pair, err := s.getCertificate(nil)
	if err != nil || pair == nil {
		t.Fatalf("no certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func TestRenewedCertificateIsServedWithoutRestart(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t, "first.example")
	writePair(t, dir, certPEM, keyPEM)
	s, err := loadServingCertificate(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.run(ctx)
	if name := servedName(t, s); name != "first.example" {
		t.Fatalf("serving %q at start", name)
	}
	certPEM, keyPEM = selfSigned(t, "renewed.example")
	writePair(t, dir, certPEM, keyPEM)
	deadline := time.Now().Add(10 * time.Second)
	for servedName(t, s) != "renewed.example" {
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not picked up within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestUnusableKeyPairFailsAtStart(t *testing.T) {
	dir := t.TempDir()
	certPEM, _ := selfSigned(t, "a.example")
	_, otherKey := selfSigned(t, "b.example")
	writePair(t, dir, certPEM, otherKey)
	_, err := loadServingCertificate(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err == nil || !strings.Contains(err.Error(), "TLS key pair") {
		t.Fatalf("want a TLS key pair error, got %v", err)
	}
}
