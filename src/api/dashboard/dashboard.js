// plumb's dashboard. A page that follows the agent (`main[data-live]`: the overview, an
// environment's page) listens to the agent's Server-Sent Events; when the agent says something
// changed, the page fetches itself again and puts the new content in place: no reload, the
// scroll position kept, and never while a control inside it has the keyboard's focus (it catches
// up when the focus leaves).
(() => {
  "use strict";
  const main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource || !window.fetch) return;
  let busy = false;
  let pending = false;
  const refresh = async () => {
    const focused = document.activeElement;
    if (busy || (focused && focused !== document.body && main.contains(focused))) {
      pending = true;
      return;
    }
    busy = true;
    pending = false;
    try {
      const answer = await fetch(window.location.href, { cache: "no-store", credentials: "same-origin" });
      if (answer.ok) {
        const page = new DOMParser().parseFromString(await answer.text(), "text/html");
        const fresh = page.querySelector("main");
        if (fresh) {
          const open = new Set([...main.querySelectorAll("details:not([open]) summary")].map((s) => s.textContent));
          main.innerHTML = fresh.innerHTML;
          main.querySelectorAll("details summary").forEach((s) => {
            if (open.has(s.textContent)) s.parentElement.removeAttribute("open");
          });
        }
      }
    } finally {
      busy = false;
      if (pending) refresh();
    }
  };
  main.addEventListener("focusout", () => setTimeout(() => { if (pending) refresh(); }, 0));
  new EventSource(main.dataset.live).addEventListener("change", refresh);
})();
