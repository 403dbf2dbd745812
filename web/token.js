// The stream token (issued for one operator and one incident) arrives in the URL fragment, which browsers
// never send to servers or in Referer; it is moved to sessionStorage (this tab only) and the fragment is
// removed from the address bar and history. Shared by the console and the grid.
"use strict";

const token = (() => {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("goldentime.token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("goldentime.token");
})();
const authorization = () => (token ? { Authorization: `Bearer ${token}` } : {});
