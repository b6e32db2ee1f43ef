{{/*
The chart's name, truncated to 63 characters (a DNS label).
*/}}
{{- define "paygress.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A fully qualified app name: the release name, plus the chart name unless the release name
already contains it. Truncated to 63 characters.
*/}}
{{- define "paygress.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "paygress.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels, plus commonLabels (on every object the chart renders, never in selectors).
*/}}
{{- define "paygress.labels" -}}
helm.sh/chart: {{ include "paygress.chart" . }}
{{ include "paygress.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paygress
{{- with .Values.commonLabels }}
{{ tpl (toYaml .) $ }}
{{- end }}
{{- end }}

{{/*
A user-supplied value rendered with `tpl`, so it may use the chart's templates and values
(e.g. {{ include "paygress.fullname" . }}): a string is rendered as it is, anything else as its
YAML. Called with (dict "value" X "context" $).
*/}}
{{- define "paygress.render" -}}
{{- if typeIs "string" .value }}
{{- tpl .value .context }}
{{- else }}
{{- tpl (.value | toYaml) .context }}
{{- end }}
{{- end }}

{{/*
Selector labels (immutable once deployed: never add to them).
*/}}
{{- define "paygress.selectorLabels" -}}
app.kubernetes.io/name: {{ include "paygress.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The service account's name.
*/}}
{{- define "paygress.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "paygress.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Deployment's name: the gateway in sidecar mode, Paygress itself in standalone mode.
*/}}
{{- define "paygress.workloadName" -}}
{{- if eq .Values.mode "sidecar" }}
{{- printf "%s-gateway" (include "paygress.fullname" . | trunc 55 | trimSuffix "-") }}
{{- else }}
{{- include "paygress.fullname" . }}
{{- end }}
{{- end }}

{{/*
The namespace Paygress creates tier pods in.
*/}}
{{- define "paygress.workloadNamespace" -}}
{{- default .Release.Namespace .Values.kubernetes.namespace }}
{{- end }}

{{/*
"true" when Paygress manages pods (config.tiers is set), else "".
*/}}
{{- define "paygress.podsEnabled" -}}
{{- if .Values.config.tiers }}true{{ end }}
{{- end }}

{{/*
The Paygress image reference; a digest wins over the tag.
*/}}
{{- define "paygress.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The Secret holding the wallet mnemonic (required).
*/}}
{{- define "paygress.seedSecret" -}}
{{- required "seed.existingSecret is required: create a Secret with the wallet mnemonic (paygress mnemonic > mnemonic.txt; kubectl create secret generic paygress-seed --from-file=mnemonic=mnemonic.txt) and set seed.existingSecret=paygress-seed" .Values.seed.existingSecret }}
{{- end }}

{{/*
"true" when the store is Redis (config.store.backend), else "".
*/}}
{{- define "paygress.redis" -}}
{{- $backend := dig "store" "backend" "sqlite" (.Values.config | default dict) -}}
{{- if eq $backend "redis" }}true{{ end }}
{{- end }}

{{/*
What the schema cannot check (values.schema.json already limits replicas, workers, rolling
updates and the autoscaler to the Redis store): Redis needs a URL; workers need TCP; the
workers' metrics ports (ports.metrics + index) must not take the gRPC or HTTP port.
*/}}
{{- define "paygress.checkStore" -}}
{{- if and (include "paygress.redis" .) (not (dig "store" "url" "" .Values.config)) (not (and .Values.redis.existingSecret .Values.redis.urlKey)) }}
{{- fail "the redis store needs a URL: config.store.url, or redis.existingSecret with redis.urlKey" }}
{{- end }}
{{- $workers := int (include "paygress.workers" .) }}
{{- if and (gt $workers 1) .Values.gateway.shareSocket }}
{{- fail "gateway.shareSocket needs config.workers: 1 (each worker has its own socket; the gateway calls 127.0.0.1:9001, shared by the workers)" }}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- $first := int .Values.ports.metrics }}
{{- $last := add $first $workers -1 }}
{{- range $name := list "grpc" "http" }}
{{- $port := int (get $.Values.ports $name) }}
{{- if and (ge $port $first) (le $port $last) }}
{{- fail (printf "ports.%s (%d) is among the workers' metrics ports %d-%d (ports.metrics + worker index): move one of them" $name $port $first $last) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
How many worker processes a pod runs (config.workers).
*/}}
{{- define "paygress.workers" -}}
{{- int (.Values.config.workers | default 1) -}}
{{- end }}

{{/*
The name of worker N's metrics port: metrics, metrics-1, metrics-2, … Each worker serves its
own /metrics on ports.metrics + N (paygress/workers.py); a scrape must reach every one of them,
each once.
*/}}
{{- define "paygress.metricsPortName" -}}
{{- if eq (int .) 0 }}metrics{{ else }}metrics-{{ . }}{{ end }}
{{- end }}

{{/*
The update strategy: as set, else Recreate with SQLite and a surge-only rolling update with Redis.
*/}}
{{- define "paygress.strategy" -}}
{{- if .Values.updateStrategy }}
{{- toYaml .Values.updateStrategy }}
{{- else if include "paygress.redis" . }}
type: RollingUpdate
rollingUpdate:
  maxUnavailable: 0
  maxSurge: 1
{{- else }}
type: Recreate
{{- end }}
{{- end }}

{{- define "paygress.redisTlsDir" -}}/etc/paygress/redis-tls{{- end }}

{{/*
Fixed paths inside the container (the image's contract, see the Dockerfile).
*/}}
{{- define "paygress.socketDir" -}}/run/paygress{{- end }}
{{- define "paygress.socketPath" -}}/run/paygress/paygress.sock{{- end }}
{{- define "paygress.stateDir" -}}/var/lib/paygress{{- end }}
{{- define "paygress.configDir" -}}/etc/paygress{{- end }}
{{- define "paygress.seedDir" -}}/var/run/secrets/paygress{{- end }}

{{/*
Paygress's config.yaml: the user's `config` plus the keys the chart owns (listeners, state
directory, metrics, dry run, and the kubernetes block when tiers are set).
*/}}
{{- define "paygress.config" -}}
{{- $config := omit (deepCopy (.Values.config | default dict)) "tiers" "listen" "state_dir" "metrics" "dry_run" "kubernetes" -}}
{{- $listen := dict "socket" (include "paygress.socketPath" .) "socket_mode" "0660" "tcp" (printf "0.0.0.0:%d" (int .Values.ports.grpc)) -}}
{{- if .Values.forwardAuth.enabled }}
{{- $_ := set $listen "http" (printf "0.0.0.0:%d" (int .Values.ports.http)) -}}
{{- end }}
{{- $_ := set $config "listen" $listen -}}
{{- $_ := set $config "state_dir" (include "paygress.stateDir" .) -}}
{{- $_ := set $config "dry_run" .Values.dryRun -}}
{{- if .Values.redis.tls.existingSecret }}
{{- $store := deepCopy ($config.store | default dict) -}}
{{- $_ := set $store "tls_ca_file" (printf "%s/ca.crt" (include "paygress.redisTlsDir" .)) -}}
{{- if .Values.redis.tls.clientCertificate }}
{{- $_ := set $store "tls_cert_file" (printf "%s/tls.crt" (include "paygress.redisTlsDir" .)) -}}
{{- $_ := set $store "tls_key_file" (printf "%s/tls.key" (include "paygress.redisTlsDir" .)) -}}
{{- end }}
{{- $_ := set $config "store" $store -}}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- $_ := set $config "metrics" (dict "listen" (printf "0.0.0.0:%d" (int .Values.ports.metrics))) -}}
{{- end }}
{{- if .Values.config.tiers }}
{{- $kube := dict "namespace" (include "paygress.workloadNamespace" .) -}}
{{- with .Values.kubernetes }}
{{- if .kubeconfig }}{{ $_ := set $kube "kubeconfig" .kubeconfig }}{{ end }}
{{- if not (kindIs "invalid" .reaperIntervalSeconds) }}{{ $_ := set $kube "reaper_interval_seconds" .reaperIntervalSeconds }}{{ end }}
{{- if not (kindIs "invalid" .graceSeconds) }}{{ $_ := set $kube "grace_seconds" (int .graceSeconds) }}{{ end }}
{{- if .statusPath }}{{ $_ := set $kube "status_path" .statusPath }}{{ end }}
{{- if .offersPath }}{{ $_ := set $kube "offers_path" .offersPath }}{{ end }}
{{- end }}
{{- $_ := set $config "kubernetes" $kube -}}
{{- $_ := set $config "tiers" .Values.config.tiers -}}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
The Paygress container. Called with (dict "root" $ "sidecar" bool): as a native sidecar
(an initContainer with restartPolicy: Always) of the gateway, or as the pod's main container.
*/}}
{{- define "paygress.container" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
name: paygress
image: {{ include "paygress.image" $root | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
{{- if .sidecar }}
restartPolicy: Always
{{- end }}
args:
  - serve
  - --config
  - {{ include "paygress.configDir" $root }}/config.yaml
  {{- range $v.extraArgs }}
  - {{ tpl (toString .) $root | quote }}
  {{- end }}
{{- with $v.lifecycle }}
lifecycle:
  {{- include "paygress.render" (dict "value" . "context" $root) | nindent 2 }}
{{- end }}
{{- with $v.envFrom }}
envFrom:
  {{- include "paygress.render" (dict "value" . "context" $root) | nindent 2 }}
{{- end }}
env:
  - name: PAYGRESS_MNEMONIC_FILE
    value: {{ include "paygress.seedDir" $root }}/mnemonic
  - name: PAYGRESS_STATE_DIR
    value: {{ include "paygress.stateDir" $root }}
  - name: PAYGRESS_SOCKET
    value: {{ include "paygress.socketPath" $root }}
  {{- with $v.redis }}
  {{- if and .existingSecret .urlKey }}
  - name: PAYGRESS_REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ .existingSecret }}
        key: {{ .urlKey }}
  {{- end }}
  {{- if and .existingSecret .passwordKey }}
  - name: PAYGRESS_REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ .existingSecret }}
        key: {{ .passwordKey }}
  {{- end }}
  {{- end }}
  {{- with $v.extraEnv }}
  {{- include "paygress.render" (dict "value" . "context" $root) | nindent 2 }}
  {{- end }}
ports:
  - name: grpc
    containerPort: {{ $v.ports.grpc }}
    protocol: TCP
  {{- if $v.forwardAuth.enabled }}
  - name: http
    containerPort: {{ $v.ports.http }}
    protocol: TCP
  {{- end }}
  {{- if $v.metrics.enabled }}
  {{- range $i := until (int (include "paygress.workers" $root)) }}
  - name: {{ include "paygress.metricsPortName" $i }}
    containerPort: {{ add $v.ports.metrics $i }}
    protocol: TCP
  {{- end }}
  {{- end }}
{{- with $v.probes.startup }}
{{- if .enabled }}
startupProbe:
  grpc:
    port: {{ $v.ports.grpc }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with $v.probes.liveness }}
{{- if .enabled }}
livenessProbe:
  grpc:
    port: {{ $v.ports.grpc }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with $v.probes.readiness }}
{{- if .enabled }}
readinessProbe:
  grpc:
    port: {{ $v.ports.grpc }}
  periodSeconds: {{ .periodSeconds }}
  timeoutSeconds: {{ .timeoutSeconds }}
  failureThreshold: {{ .failureThreshold }}
{{- end }}
{{- end }}
{{- with $v.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: config
    mountPath: {{ include "paygress.configDir" $root }}
    readOnly: true
  - name: seed
    mountPath: {{ include "paygress.seedDir" $root }}
    readOnly: true
  - name: state
    mountPath: {{ include "paygress.stateDir" $root }}
  - name: socket
    mountPath: {{ include "paygress.socketDir" $root }}
  - name: tmp
    mountPath: /tmp
  {{- if $v.redis.tls.existingSecret }}
  - name: redis-tls
    mountPath: {{ include "paygress.redisTlsDir" $root }}
    readOnly: true
  {{- end }}
  {{- with $v.extraVolumeMounts }}
  {{- include "paygress.render" (dict "value" . "context" $root) | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The unpaid request `helm test` sends, as JSON {"method", "host", "path"}: tests.request when
set, else one built from the first route of config.routes that has a path_prefix (its first
host and method); "" when there is none (the test then checks health only).
*/}}
{{- define "paygress.testRequest" -}}
{{- $request := dict -}}
{{- with .Values.tests.request }}
{{- $request = dict "method" (.method | default "GET") "host" (.host | default "paygress-helm-test.invalid") "path" .path -}}
{{- else }}
{{- range .Values.config.routes }}
{{- $match := .match | default dict -}}
{{- if and (not $request) $match.path_prefix }}
{{- $prefix := $match.path_prefix -}}
{{- $path := ternary (printf "%shelm-test" $prefix) $prefix (hasSuffix "/" $prefix) -}}
{{- $host := first ($match.hosts | default (list "paygress-helm-test.invalid")) -}}
{{- $method := first ($match.methods | default (list "GET")) -}}
{{- $request = dict "method" (upper $method) "host" $host "path" $path -}}
{{- end }}
{{- end }}
{{- end }}
{{- if $request }}{{ toJson $request }}{{ end }}
{{- end }}

{{/*
Labels of the `helm test` pod: not the selector labels, so that neither the Deployment's
ReplicaSet (which adopts matching orphan pods) nor the Services select it.
*/}}
{{- define "paygress.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "paygress.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- define "paygress.testLabels" -}}
helm.sh/chart: {{ include "paygress.chart" . }}
{{ include "paygress.testSelectorLabels" . }}
app.kubernetes.io/component: test
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: paygress
{{- with .Values.commonLabels }}
{{ tpl (toYaml .) $ }}
{{- end }}
{{- end }}
