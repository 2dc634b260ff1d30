/* Dashboard links printed by Connect clients are /connect/#/apps/<guid>[/logs|/draft/<id>|/<pane>]:
 * send the browser to the server-rendered page for that fragment. */
(function () {
  var panes = { logs: "logs", access: "access", info: "info", runtime: "runtime", vars: "variables",
    environment: "environment", bundles: "bundles" };

  function route() {
    var m = window.location.hash.match(/^#\/apps\/([0-9a-fA-F-]{36})(?:\/([a-z]+)(?:\/(\d+))?)?\/?$/);
    if (!m) return false;
    var target = "/connect/apps/" + m[1];
    if (m[2] === "draft" && m[3]) target += "?draft=" + m[3];
    else if (m[2] && panes[m[2]]) target += "/" + panes[m[2]];
    window.podiumRouted = true;
    window.location.replace(target);
    return true;
  }

  route();
  window.addEventListener("hashchange", route);
})();
