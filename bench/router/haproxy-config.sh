# Sourced by run.sh and pair.sh: the HAProxy configuration both measure.

# haproxy_config BIND THREADS COOKIE B1 B2 prints it: cookie insert over the
# two backends, with the X-Forwarded-For, -Host and -Proto headers
# affinity-router sends (as the spec asks of it) and Caddy sends by default,
# so that every backend parses the same request.
haproxy_config() {
	cat <<EOF
global
    nbthread $2
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 30s

frontend bench
    bind $1
    default_backend backends

backend backends
    balance roundrobin
    cookie $3 insert indirect nocache
    option forwardfor
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    http-request set-header X-Forwarded-Proto http
    option httpchk
    http-check send meth GET uri /
    server b1 $4 cookie b1 check
    server b2 $5 cookie b2 check
EOF
}
