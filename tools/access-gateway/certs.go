package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"sync/atomic"

	"k8s.io/apiserver/pkg/server/dynamiccertificates"
)

// servingCertificate holds the gateway's TLS key pair and swaps it when the files change, so a
// renewed kubernetes.io/tls Secret (cert-manager rotates them before expiry) is served without
// restarting the pod. The files are watched by k8s.io/apiserver's dynamic serving content, the
// same watcher kube-apiserver uses for its own --tls-cert-file.
type servingCertificate struct {
	content *dynamiccertificates.DynamicCertKeyPairContent
	current atomic.Pointer[tls.Certificate]
}

// loadServingCertificate fails at start, not on the first handshake, when the Secret's files are
// unusable.
func loadServingCertificate(certFile, keyFile string) (*servingCertificate, error) {
	content, err := dynamiccertificates.NewDynamicServingContentFromFiles("serving-cert", certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS key pair: %w", err)
	}
	s := &servingCertificate{content: content}
	if err := s.reload(); err != nil {
		return nil, fmt.Errorf("TLS key pair: %w", err)
	}
	content.AddListener(s)
	return s, nil
}

// run watches the files until ctx ends.
func (s *servingCertificate) run(ctx context.Context) {
	go s.content.Run(ctx, 1)
}

// Enqueue is called by the dynamic content whenever the files' content changed.
func (s *servingCertificate) Enqueue() {
	if err := s.reload(); err != nil {
		// A half-written pair (the Secret volume swaps both files at once, but a hand edit may
		// not) keeps the previous certificate: handshakes keep working meanwhile.
		log.Printf("access-gateway: keeping the previous TLS certificate: %v", err)
		return
	}
	log.Printf("access-gateway: TLS certificate reloaded")
}

func (s *servingCertificate) reload() error {
	certPEM, keyPEM := s.content.CurrentCertKeyContent()
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return errors.New("empty certificate or key")
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	s.current.Store(&pair)
	return nil
}

// getCertificate is the tls.Config hook: every handshake gets the newest pair.
func (s *servingCertificate) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.current.Load(), nil
}
