// Body of every Reclaim web hook. Kratos calls it with the hook's context; it sends what Reclaim needs and
// nothing else: no cookies, no CSRF tokens, no UI nodes.
function(ctx) {
  identity: ctx.identity,
  [if std.objectHas(ctx, 'session') && ctx.session != null then 'session']: {
    id: ctx.session.id,
    authenticated_at: std.get(ctx.session, 'authenticated_at', null),
    authentication_methods: std.get(ctx.session, 'authentication_methods', []),
  },
  flow: {
    id: ctx.flow.id,
    type: ctx.flow.type,
    [if std.objectHas(ctx.flow, 'active') then 'active']: ctx.flow.active,
  },
  request: {
    accept_language: std.get(std.get(ctx, 'request_headers', {}), 'Accept-Language', [null])[0],
  },
}
