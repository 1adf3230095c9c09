package main

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// APIGroup is the group of the ModelService resource whose RBAC rules guard a model.
const APIGroup = "tfmaas.io"

// permission is the RBAC rule a call needs: a verb on a (sub)resource of one ModelService.
type permission struct {
	verb        string
	subresource string // "" for the ModelService itself
}

var (
	// Calls that run the model: `create` on modelservices/predict.
	callModel = permission{verb: "create", subresource: "predict"}
	// Calls that only read what is served: `get` on the ModelService.
	readModel = permission{verb: "get"}
)

// String names the rule as an RBAC author writes it.
func (p permission) String() string {
	resource := "modelservices"
	if p.subresource != "" {
		resource += "/" + p.subresource
	}
	return fmt.Sprintf("%q on %q", p.verb, resource)
}

// grpcPermissions maps each gRPC method TF Serving offers to the rule it needs. A method not in
// the map (HandleReloadConfigRequest, reflection, anything new) is refused: reloading the model
// config is the operator's job and no caller's.
var grpcPermissions = map[string]permission{
	"/tensorflow.serving.PredictionService/Predict":          callModel,
	"/tensorflow.serving.PredictionService/Classify":         callModel,
	"/tensorflow.serving.PredictionService/Regress":          callModel,
	"/tensorflow.serving.PredictionService/MultiInference":   callModel,
	"/tensorflow.serving.PredictionService/GetModelMetadata": readModel,
	"/tensorflow.serving.ModelService/GetModelStatus":        readModel,
}

// restModelPath is TF Serving's REST surface: /v1/models/NAME, optionally a version or label,
// then :verb for calls or /metadata for reads.
var restModelPath = regexp.MustCompile(
	`^/v1/models/[^/:]+(?:/versions/[0-9]+|/labels/[^/:]+)?(?:(:predict|:classify|:regress)|/metadata)?$`)

// grpcPermission says which rule a gRPC call needs; ok is false for a method no rule opens.
func grpcPermission(method string) (permission, bool) {
	p, ok := grpcPermissions[method]
	return p, ok
}

// restPermission says which rule a REST request needs; ok is false for anything else.
func restPermission(method, path string) (permission, bool) {
	match := restModelPath.FindStringSubmatch(path)
	if match == nil {
		return permission{}, false
	}
	isCall := match[1] != ""
	switch {
	case isCall && method == http.MethodPost:
		return callModel, true
	case !isCall && !strings.HasSuffix(path, ":") && (method == http.MethodGet || method == http.MethodHead):
		return readModel, true
	}
	return permission{}, false
}

// target is the ModelService this gateway guards.
type target struct {
	namespace    string
	modelService string
}

// attributes is the SubjectAccessReview the API server is asked for one call.
func (t target) attributes(caller user.Info, p permission) authorizer.AttributesRecord {
	return authorizer.AttributesRecord{
		User:            caller,
		Verb:            p.verb,
		Namespace:       t.namespace,
		APIGroup:        APIGroup,
		APIVersion:      "*",
		Resource:        "modelservices",
		Subresource:     p.subresource,
		Name:            t.modelService,
		ResourceRequest: true,
	}
}

// deniedMessage names the missing rule so an admin can grant it; it names no caller input.
func (t target) deniedMessage(p permission) string {
	return fmt.Sprintf("permission denied: this call needs %s (apiGroup %q) on %q in namespace %q",
		p, APIGroup, t.modelService, t.namespace)
}

// unknownMessage is the refusal of a call that no rule can open.
const unknownMessage = "permission denied: this method or path is not offered through the access gateway"

// unauthenticatedMessage is the refusal of a call without a valid bearer token.
const unauthenticatedMessage = "unauthenticated: send a valid token as \"authorization: Bearer <token>\""

// reviewFailedMessage is the refusal of a call the API server could not be asked about.
const reviewFailedMessage = "access check failed: the Kubernetes API server did not answer"
