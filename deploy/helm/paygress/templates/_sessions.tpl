{{/*
Paid sessions' pieces for Istio (requestauthentication.yaml, authorizationpolicy.yaml).
*/}}

{{/*
The gateway pods' labels the Istio policies select: istio.authorizationPolicy.selector, else
gateway.labels in sidecar mode.
*/}}
{{- define "paygress.istioSelector" -}}
{{- $selector := .Values.istio.authorizationPolicy.selector -}}
{{- if and (not $selector) (eq .Values.mode "sidecar") }}
{{- $selector = .Values.gateway.labels }}
{{- end }}
{{- if not $selector }}
{{- fail "istio.authorizationPolicy.selector is required in standalone mode: the labels of your ingress gateway's pods" }}
{{- end }}
{{- toYaml $selector }}
{{- end }}

{{/*
The AuthorizationPolicy's rules: the configured ones, minus the session routes' paths, plus one
rule per session route that asks Paygress unless Istio verified a session for that route (its
JWT filter writes the session's audience into x-paygress-route, and removes any client copy).
*/}}
{{- define "paygress.authorizationRules" -}}
{{- $sessions := .Values.istio.authorizationPolicy.sessionRoutes | default list -}}
{{- $sessionPaths := list -}}
{{- range $sessions }}{{ $sessionPaths = concat $sessionPaths .paths }}{{ end -}}
{{- $rules := list -}}
{{- range .Values.istio.authorizationPolicy.rules }}
{{- $rule := deepCopy . -}}
{{- if $sessionPaths }}
{{- $to := list -}}
{{- range ($rule.to | default (list (dict "operation" dict))) }}
{{- $op := deepCopy (.operation | default dict) -}}
{{- $_ := set $op "notPaths" (concat ($op.notPaths | default list) $sessionPaths | uniq) -}}
{{- $to = append $to (dict "operation" $op) -}}
{{- end }}
{{- $_ := set $rule "to" $to -}}
{{- end }}
{{- $rules = append $rules $rule -}}
{{- end }}
{{- range $sessions }}
{{- $when := list (dict "key" "request.headers[x-paygress-route]" "notValues" (list .route)) -}}
{{- $rules = append $rules (dict "to" (list (dict "operation" (dict "paths" .paths))) "when" $when) -}}
{{- end }}
{{- toYaml $rules }}
{{- end }}
