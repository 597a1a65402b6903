"""A webinar (a `broadcast` meeting) with fake cameras: the host presents; the viewers,
who join by the link, never ask for a camera, have no tile of their own and no Mute, and
receive the host's video on receive-only peer connections; everyone sees how many watch.
A viewer that goes leaves no peer connection behind on the host's page; a viewer made
host presents to the host and to the viewers who come after."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from web._browser import WebSession, peer_stats, sign_in, wait_for
from web._server import OwnServer
from wsutil import hello, request, ws_connect

#: Counts the page's calls of getUserMedia (a viewer must make none).
COUNT_MEDIA_REQUESTS = """
window.__mediaRequests = 0;
if (navigator.mediaDevices) {
  const ask = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (...args) => {
    window.__mediaRequests += 1;
    return ask(...args);
  };
}
"""
#: The negotiated direction of every transceiver of the page's open peer connections.
DIRECTIONS = """() => window.__peerConnections
  .filter((pc) => pc.connectionState !== 'closed')
  .flatMap((pc) => pc.getTransceivers().map((t) => t.currentDirection))"""
#: Seats of closed pages end this soon (yet a reload is back well before), so that the
#: count drops within the test.
SEAT_GRACE_MS = "3000"


def open_page(web: WebSession, user: str) -> Page:
    page = web.page(user)
    page.context.add_init_script(COUNT_MEDIA_REQUESTS)
    return page


def media_requests(page: Page) -> int:
    count: int = page.evaluate("window.__mediaRequests")
    return count


def peers(page: Page) -> set[str]:
    """Whom the page has a peer connection to."""
    return set((page.get_attribute("#meeting", "data-peers") or "").split())


def frames(page: Page) -> list[int]:
    """Video frames decoded so far on each connected peer connection of the page."""
    return [count for state, count in peer_stats(page) if state == "connected"]


def video_flows(page: Page, who: str, connections: int = 1) -> None:
    """Waits until each of `connections` peer connections decodes video, then decodes more."""
    wait_for(lambda: len(frames(page)) == connections and min(frames(page)) > 0, f"{who} decodes video")
    before = frames(page)
    wait_for(lambda: all(now > then for now, then in zip(frames(page), before, strict=True)), f"{who} keeps decoding")


def create_webinar(host: Page, http: str, user: str, tenant: str) -> str:
    """Signs in, creates a webinar, and returns its link."""
    sign_in(host, http, user, tenant)
    host.click("#new-webinar")
    expect(host.locator(".tile[data-local]")).to_have_attribute("data-role", "host")
    expect(host.locator("#viewers")).to_have_text("0 watching")
    link = host.input_value("#meeting-link")
    assert "#meeting=m-" in link
    return link


def join_as_viewer(page: Page, http: str, user: str, tenant: str, link: str) -> str:
    """Opens the link, checks the page watches only, and returns its participant id."""
    sign_in(page, http, user, tenant, "#" + link.split("#", 1)[1])
    expect(page.locator("#meeting")).to_have_attribute("data-role", "viewer")
    expect(page.locator("#mic")).to_be_hidden()
    expect(page.locator(".tile[data-local]")).to_have_count(0)
    me = page.get_attribute("#meeting", "data-me")
    assert me and me.startswith("p-")
    return me


def test_viewers_watch_the_host_and_leave_no_peer_connection_behind(
    web: WebSession, own_server: Callable[..., OwnServer], tenant: str
) -> None:
    server = own_server("--seat-grace-ms", SEAT_GRACE_MS)
    http = server.current.http
    alice = open_page(web, "alice")
    link = create_webinar(alice, http, "alice", tenant)
    host_id = alice.get_attribute(".tile[data-local]", "data-participant")
    assert host_id

    viewers = {user: open_page(web, user) for user in ("bob", "carol")}
    bob, carol = viewers["bob"], viewers["carol"]
    viewer_ids = {user: join_as_viewer(page, http, user, tenant, link) for user, page in viewers.items()}
    for user, page in viewers.items():
        host_tile = page.locator(".tile")
        expect(host_tile).to_have_count(1)  # the host's only
        expect(host_tile).to_have_attribute("data-participant", host_id)
        expect(host_tile).to_have_attribute("data-media", "connected")
        video_flows(page, user)
        assert page.evaluate(DIRECTIONS) == ["recvonly", "recvonly"]
        assert media_requests(page) == 0
    for page in (alice, bob, carol):
        expect(page.locator("#viewers")).to_have_text("2 watching")

    # The host answered both viewers and shows them no tile; it sends, receives nothing.
    expect(alice.locator(".tile")).to_have_count(1)
    assert media_requests(alice) == 1
    wait_for(lambda: peers(alice) == set(viewer_ids.values()), "the host has a peer connection per viewer")
    wait_for(lambda: len(frames(alice)) == 2, "both of the host's peer connections connect")
    assert alice.evaluate(DIRECTIONS) == ["sendonly"] * 4

    # A reload keeps the seat, viewer or host; the viewers offer afresh to a host that
    # reloaded (it knows no viewers to offer to).
    bob.reload()
    expect(bob.locator("#meeting")).to_have_attribute("data-me", viewer_ids["bob"])
    video_flows(bob, "bob after his reload")
    assert media_requests(bob) == 0
    alice.reload()
    expect(alice.locator(".tile[data-local]")).to_have_attribute("data-participant", host_id)
    for user, page in viewers.items():
        video_flows(page, f"{user} after the host's reload")
    wait_for(lambda: peers(alice) == set(viewer_ids.values()), "the viewers offer again to the reloaded host")
    expect(alice.locator(".tile")).to_have_count(1)

    # Bob closes his page: his seat ends after the grace time, and the host forgets his
    # peer connection (closed, not kept for a viewer who is gone).
    bob.close()
    for page in (alice, carol):
        expect(page.locator("#viewers")).to_have_text("1 watching")
    wait_for(lambda: peers(alice) == {viewer_ids["carol"]}, "the host forgets bob's peer connection")
    assert sorted(state for state, _ in peer_stats(alice)) == ["closed", "connected"]
    video_flows(carol, "carol after bob left")

    # Carol's page crashes and says nothing: the host's peer connection to her fails (ICE
    # consent, about 15 s in Chromium) and is forgotten too.
    with contextlib.suppress(PlaywrightError):
        carol.goto("chrome://crash", timeout=5_000)
    expect(alice.locator("#viewers")).to_have_text("0 watching")
    wait_for(lambda: not peers(alice), "the host forgets carol's failed peer connection", timeout_s=45)
    assert [state for state, _ in peer_stats(alice)] == ["closed", "closed"]


def test_a_viewer_made_host_presents(web: WebSession, own_server: Callable[..., OwnServer], tenant: str) -> None:
    server = own_server()
    http = server.current.http
    alice = open_page(web, "alice")
    link = create_webinar(alice, http, "alice", tenant)
    carol = open_page(web, "carol")
    carol_id = join_as_viewer(carol, http, "carol", tenant, link)
    expect(carol.locator(".tile")).to_have_attribute("data-media", "connected")
    expect(alice.locator("#viewers")).to_have_text("1 watching")

    # A tenant admin (the host's page shows no viewers to pick) makes Carol the host.
    with ws_connect(server.current.url) as admin:
        assert hello(admin, server.current.token("admin", tenant, role="admin"))["op"] == "welcome"
        meeting = link.split("#meeting=", 1)[1]
        frame = {"op": "meeting.transfer_host", "id": 1, "meeting": meeting, "participant": carol_id}
        reply = request(admin, frame)
        assert reply["op"] == "reply", json.dumps(reply)

    # Carol now presents: her camera, her tile, her Mute; Alice sees her on the peer
    # connection Carol opened as a viewer (renegotiated, not replaced).
    expect(carol.locator(".tile[data-local]")).to_have_attribute("data-role", "host")
    expect(carol.locator("#mic")).to_be_visible()
    expect(carol.locator("#meeting")).to_have_attribute("data-role", "host")
    assert media_requests(carol) == 1
    expect(alice.locator("#meeting")).to_have_attribute("data-role", "participant")
    expect(alice.locator("#end-meeting")).to_be_hidden()
    carol_tile = alice.locator(f".tile[data-participant='{carol_id}']")
    expect(carol_tile).to_have_attribute("data-role", "host")
    expect(carol_tile).to_have_attribute("data-media", "connected")
    video_flows(alice, "alice, from carol")
    assert len(peer_stats(alice)) == 1  # the same peer connection
    for page in (alice, carol):
        expect(page.locator("#viewers")).to_have_text("0 watching")

    # A viewer who comes now watches both presenters.
    dave = open_page(web, "dave")
    join_as_viewer(dave, http, "dave", tenant, link)
    expect(dave.locator(".tile[data-media=connected]")).to_have_count(2)
    video_flows(dave, "dave", connections=2)
    assert media_requests(dave) == 0
    for page in (alice, carol, dave):
        expect(page.locator("#viewers")).to_have_text("1 watching")
