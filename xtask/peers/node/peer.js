// The Node `ws` peer of `cargo xtask bench --peers`: the same three paths as the bare
// tokio-tungstenite peer (xtask/peers/bare), on the `ws` package installed from npm into
// target/bench-node (NODE_PATH points there).
//   /echo  every frame is sent back (the ping round trip)
//   /sub   joins the broadcast group
//   /pub   every text frame is sent to every /sub connection (the fan-out)
// Listens on 127.0.0.1:$PORT (0: any free port) and prints `listening <port>` on stdout.
'use strict';
const { WebSocketServer } = require('ws');

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(process.env.PORT || 0),
  perMessageDeflate: false,
  clientTracking: false,
});
const subs = new Set();

wss.on('connection', (ws, req) => {
  ws.on('error', () => {});
  const path = (req.url || '').split('?')[0];
  if (path === '/echo') {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  } else if (path === '/sub') {
    subs.add(ws);
    ws.on('close', () => subs.delete(ws));
  } else if (path === '/pub') {
    ws.on('message', (data, isBinary) => {
      for (const s of subs) s.send(data, { binary: isBinary });
    });
  } else {
    ws.close(1008);
  }
});
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
