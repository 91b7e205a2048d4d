// The Node.js app of lesson 09: a page that says which container answered it, and which
// version of this code it runs. Its one dependency, express, is installed by `npm install`
// when the image is built.
const os = require('os');
const express = require('express');

const VERSION = '1';
const app = express();

app.get('/', (req, res) => {
  res.type('text/plain').send(`Hello from ${os.hostname()}, version ${VERSION}\n`);
});

app.get('/version', (req, res) => {
  res.json({
    version: VERSION,
    express: require('express/package.json').version,
    node: process.version,
  });
});

app.listen(8080, () => console.log(`listening on port 8080, version ${VERSION}`));

// PID 1 gets no default action for SIGTERM (lesson 07): without this line `edu stop` (and
// `docker stop`) would wait its 10 seconds and then kill.
process.on('SIGTERM', () => process.exit(0));
