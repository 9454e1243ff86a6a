// Body of Kratos's courier calls to the Reclaim gateway (email: courier.http; SMS: the `sms` channel). It
// sends what the gateway needs: the recipient, the message type and template type, Kratos's rendering (sent
// when gateway.kratos.use_own_templates = false), the template's data without the identity's traits and
// addresses (only its id, so erasing the identity forgets the dedupe record), and the user's language.
function(ctx)
  local data = if std.objectHas(ctx, 'template_data') && std.isObject(ctx.template_data) then ctx.template_data else {};
  local headers = if std.objectHas(ctx, 'request_headers') && std.isObject(ctx.request_headers) then ctx.request_headers else {};
  {
    recipient: ctx.recipient,
    message_type: ctx.message_type,
    template_type: ctx.template_type,
    subject: ctx.subject,
    body: ctx.body,
    [if std.objectHas(ctx, 'html_body') then 'html_body']: ctx.html_body,
    template_data: {
      [field]: data[field]
      for field in std.objectFields(data)
      if field != 'identity' && field != 'traits'
    } + (
      if std.objectHas(data, 'identity') && std.isObject(data.identity) && std.objectHas(data.identity, 'id')
      then { identity: { id: data.identity.id } }
      else {}
    ),
    request_headers: {
      [if std.objectHas(headers, 'Accept-Language') then 'Accept-Language']: headers['Accept-Language'],
    },
  }
