"""Entry point: `streamlit run Home.py` serves the Draw, History and Model pages and the REST API.

Streamlit finds the ``st.App`` below (``app``) and serves it with uvicorn: the same server
then answers ``/api/predict``, ``/api/health`` and ``/api/stats`` next to the pages. Its
lifespan builds the store and loads the model before the first request (so an outbox left by
the previous process drains without waiting for a visitor) and closes the store at shutdown. When
Streamlit runs this file as the page script (``__name__ == "__main__"``) it only declares the
navigation and the sidebar. The pages live in ``app_pages/``, not ``pages/``: Streamlit
treats a ``pages/`` folder as the old multipage layout, and a session that starts on a
page URL such as /history would run that page directly, without this navigation. With
``MNIST_DASHBOARD_PASSWORD`` set, a session that has not signed in gets only the sign-in page.
"""

import contextlib
import pathlib
import threading

import streamlit as st

if __name__ == "__main__":
    from dashboard import login, sidebar

    st.set_page_config(page_title="Digit reader", page_icon=":material/draw:", layout="wide")
    # (file, title, icon, URL path); the first is the default page.
    pages = [
        ("app_pages/draw.py", "Draw", ":material/draw:", "draw"),
        ("app_pages/history.py", "History", ":material/monitoring:", "history"),
        ("app_pages/model.py", "Model", ":material/model_training:", "model"),
    ]
    if not login.signed_in():
        # MNIST_DASHBOARD_PASSWORD is set: every page's URL shows the sign-in form until the session
        # signs in (then the same URL shows its page), and no navigation or sidebar is drawn.
        st.navigation([st.Page(login.render, title=title, url_path=url_path, default=index == 0)
                       for index, (_, title, _, url_path) in enumerate(pages)], position="hidden").run()
    else:
        navigation = st.navigation([st.Page(file, title=title, icon=icon, url_path=url_path, default=index == 0)
                                    for index, (file, title, icon, url_path) in enumerate(pages)])
        sidebar.render_sidebar()
        login.render_sign_out()
        navigation.run()
else:
    # Imported by the server (not run as a page): build the ASGI app with the API routes.
    from dashboard import heap, resources
    from mnist_core import rest_api, settings

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # The model and store first (milliseconds); the pages' charts warm up in a thread meanwhile.
        resources.load_at_start()
        threading.Thread(target=heap.freeze_after_warm_up, name="mnist-warm-up", daemon=True).start()
        yield
        resources.shut_down()

    app = st.App(
        pathlib.Path(__file__).resolve(),
        lifespan=lifespan,
        routes=rest_api.create_routes(
            get_recognizer=resources.recognizer_resource,
            get_store=resources.store_resource,
            # Read per request: settings read now, before Streamlit's secrets load, would miss them.
            api_key=lambda: settings.get_settings().api_key,
        ),
    )
