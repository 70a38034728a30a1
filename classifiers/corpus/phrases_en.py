"""English phrase pools for the synthetic corpus; {slots} are filled by the generator."""

from __future__ import annotations

SUBJECTS: dict[str, list[str]] = {
    "sales": [
        "Quote for {seats} licences",
        "Pricing question",
        "Interested in {product}",
        "Volume discount?",
        "Request for a demo",
        "Upgrade options for our account",
        "Question before we buy",
        "Enterprise plan enquiry",
        "Reseller enquiry",
        "Trial extension request",
    ],
    "billing": [
        "Invoice {invoice}",
        "Question about my bill",
        "Charged twice",
        "Payment failed",
        "Wrong amount on invoice {invoice}",
        "VAT number on invoice",
        "Refund of overpayment",
        "Change of billing address",
        "Direct debit problem",
        "Credit note request",
    ],
    "technical_support": [
        "{product} not working",
        "Error {code} when logging in",
        "Cannot sync",
        "App crashes on start",
        "Problem with {product}",
        "Login issue",
        "API returns {code}",
        "Setup help needed",
        "Device will not connect",
        "Bug report",
    ],
    "returns": [
        "Return order #{order}",
        "Exchange request",
        "Damaged item in order #{order}",
        "Wrong size delivered",
        "Warranty claim",
        "How do I send this back?",
        "Repair request for {product}",
        "Refund for returned item",
        "RMA for order #{order}",
        "Missing part, order #{order}",
    ],
    "complaints": [
        "Complaint",
        "Very disappointed",
        "Formal complaint about your service",
        "Unacceptable treatment",
        "Still waiting, third time writing",
        "Poor service",
        "Complaint about your courier",
        "Rude support agent",
        "I want to escalate this",
        "Not happy with how this was handled",
    ],
    "general": [
        "General question",
        "Opening hours",
        "Change my contact details",
        "Question",
        "Information request",
        "Privacy question",
        "Partnership idea",
        "Address for letters",
        "Account details update",
        "Quick question",
    ],
}

# Routine requests: what each department handles day to day.
NORMAL: dict[str, list[str]] = {
    "sales": [
        "We are looking at {product} for our team of {seats} people and would like a quote.",
        "Could you tell me the price difference between the Team and the Business plan?",
        "Do you offer a discount for annual payment or for non-profit organisations?",
        "I would like to book a demo of {product} for our IT manager next week.",
        "Is it possible to add {seats} more users to our current subscription?",
        "We are comparing three vendors and need your price list and delivery terms.",
        "Can we extend our free trial by two weeks? We have not finished testing.",
        "Which plan includes single sign-on and the reporting module?",
    ],
    "billing": [
        "I have a question about invoice {invoice}: the amount is {amount} but I expected less.",
        "Our card was declined for this month's payment. How can we pay by bank transfer?",
        "Please send me a copy of invoice {invoice}, I cannot find it in the portal.",
        "The VAT number on our invoices is missing. Our VAT ID is {vat}.",
        "We changed our billing address to {street}, {city}. Please update it.",
        "I was charged {amount} on {date} and I am not sure what this payment is for.",
        "Could you switch our payment method from card to direct debit?",
        "We need a credit note for the unused part of last month.",
    ],
    "technical_support": [
        "Since the last update I cannot log in to {product}. I get error {code}.",
        "{product} stopped syncing yesterday; the status stays on 'waiting'.",
        "The app closes right after the start screen on my phone.",
        "Calls to the API return HTTP {code} for some requests, the rest work.",
        "I cannot connect {product} to our Wi-Fi, the light keeps blinking orange.",
        "The export to PDF produces an empty file.",
        "How do I reset my password? The reset mail never arrives.",
        "After installing version 5.2 the dashboard loads very slowly.",
    ],
    "returns": [
        "I would like to return the {item} from order #{order}, it does not fit.",
        "The {item} in order #{order} arrived damaged. How can I exchange it?",
        "I received the wrong colour. Please tell me how to send it back.",
        "My {item} stopped working after three months. Is this covered by the warranty?",
        "I sent the parcel back on {date} but have not received a refund yet.",
        "A part is missing from the {item} I ordered (order #{order}).",
        "Can I exchange the {item} for a larger size instead of a refund?",
        "Please send me a return label for order #{order}.",
    ],
    "complaints": [
        "I am very unhappy with the way my order #{order} was handled.",
        "This is the third time I write about the same problem and nobody answers.",
        "Your agent on the phone was rude and hung up on me.",
        "The courier left the parcel in the rain even though I was at home.",
        "I was promised a call back on {date} and nobody called.",
        "The service I received does not match what your advertising promises.",
        "I waited 45 minutes on hold and was then disconnected.",
        "Your staff gave me three different answers to the same question.",
    ],
    "general": [
        "What are your opening hours over the holidays?",
        "Please update my phone number to {phone}.",
        "Where can I find your terms and conditions?",
        "Do you have an office in {city} where I can drop off documents?",
        "Could you tell me which personal data you store about me?",
        "Who should I contact about a partnership with your company?",
        "What is the correct postal address for letters to your head office?",
        "Can I change the e-mail address of my account to this one?",
    ],
}

SUGGESTION: dict[str, list[str]] = {
    "sales": [
        "It would help if your website showed prices for teams larger than {seats} users.",
        "A monthly plan without a long contract would make it easier for small firms to start.",
        "You could offer a bundle of {product} with the training package.",
        "Maybe add a comparison table of the plans to your brochure.",
    ],
    "billing": [
        "It would be nice to receive invoices as PDF and as XML for our accounting software.",
        "Could you consider sending the payment reminder a few days earlier?",
        "A single combined invoice for all our accounts would save us a lot of work.",
        "It would be great if the billing portal showed the VAT separately.",
    ],
    "technical_support": [
        "A dark mode for {product} would be very welcome.",
        "It would be great if the app could export reports to CSV, not only PDF.",
        "Please consider adding keyboard shortcuts to the editor.",
        "The settings page could remember the last tab I used.",
    ],
    "returns": [
        "It would be easier if the return label were included in the parcel.",
        "You could let customers choose a pick-up time for returns.",
        "A status page for returns would save many of these e-mails.",
        "Maybe allow exchanges directly without a refund and a new order.",
    ],
    "complaints": [
        "Your hotline would feel friendlier with a call-back option instead of waiting.",
        "It might help to give customers a case number right away.",
        "I think your staff would benefit from a clearer escalation process.",
        "Please consider answering complaints within a fixed number of days.",
    ],
    "general": [
        "It would be nice to have a newsletter with tips on using your products.",
        "Your FAQ could have a search box.",
        "You could open on Saturday mornings for people who work during the week.",
        "Maybe publish your holiday opening hours earlier on the website.",
    ],
}

SPECIAL: dict[str, list[str]] = {
    "sales": [
        "We need a quote in Swiss francs with payment in three instalments, is that possible?",
        "Our tender requires a signed statement about where the data is hosted.",
        "We want to buy for a subsidiary in another country but pay from headquarters.",
        "The order form does not accept our purchase order number because it has letters.",
    ],
    "billing": [
        "We were invoiced in US dollars although our contract is in euros.",
        "The invoice is addressed to our old company name after the merger.",
        "We paid invoice {invoice} twice by mistake, once by card and once by transfer.",
        "Our account shows a negative balance that we cannot explain.",
    ],
    "technical_support": [
        "The error only happens when two users edit the same record at the same time.",
        "Sync works on Windows but not on the same account on Linux.",
        "The problem appears only with the German keyboard layout.",
        "After moving to a new server, all timestamps are shifted by one hour.",
    ],
    "returns": [
        "The {item} was a gift bought with another person's account and I need to return it.",
        "I am abroad until next month and cannot send the {item} back within 14 days.",
        "The item was delivered to my neighbour who has since moved away.",
        "Only one part of a set is faulty; can I return just that part?",
    ],
    "complaints": [
        "My complaint was closed without an answer and I cannot reopen it.",
        "I was charged a fee for a complaint I made, which seems very strange.",
        "The issue concerns two of your departments and each says the other is responsible.",
        "I made this complaint on behalf of my elderly father, who is your customer.",
    ],
    "general": [
        "I need a confirmation letter on paper for my bank, signed by your company.",
        "My account is registered under my late husband's name; how do I change it?",
        "We need your company registration details for a government form.",
        "I would like to receive all correspondence in large print.",
    ],
}

EMERGENCY: dict[str, list[str]] = {
    "sales": [
        "Our licences expire tonight and our whole company will be locked out tomorrow morning.",
        "The tender closes in two hours and we still have no signed quote from you.",
        "Our renewal order was rejected and all {seats} users lose access at midnight.",
    ],
    "billing": [
        "You charged our card {amount} forty times in the last hour, please stop it now.",
        "Someone is using our account to make payments we did not authorise.",
        "Our service was cut off for non-payment although we paid; our shop is offline.",
    ],
    "technical_support": [
        "Our production system is down and none of our {seats} users can work.",
        "All customer data in {product} disappeared after the update this morning.",
        "We think our account was hacked: passwords were changed and data is being exported.",
    ],
    "returns": [
        "The {item} you sent started to smoke and melted while charging.",
        "The replacement part caused a gas smell; we switched everything off.",
        "The battery of the returned device is swelling and I do not know how to ship it safely.",
    ],
    "complaints": [
        "Your technician left the water connection open and our kitchen is flooding.",
        "Your delivery driver damaged my car and drove away; I have the plate number.",
        "My personal data was sent to another customer by your staff.",
    ],
    "general": [
        "A man claiming to be from your company is at my door asking for my bank card.",
        "Our office was broken into and your access cards were stolen.",
        "Your web site shows my home address and phone number publicly.",
    ],
}

URGENCY_LINES: dict[str, list[str]] = {
    "suggestion": [
        "Just an idea, no answer needed.",
        "Keep up the good work.",
        "I thought I would share this feedback.",
        "Not urgent at all, just a suggestion.",
        "Happy to discuss if it helps.",
        "Thank you for listening to customers.",
    ],
    "normal": [
        "Thanks in advance.",
        "Whenever you have time.",
        "Thank you for your help.",
        "Let me know if you need anything else.",
        "Looking forward to your reply.",
        "",
    ],
    "special_problem": [
        "I could not find anything about this in your FAQ.",
        "This seems to be an unusual case, so I hope someone can look at it personally.",
        "The standard form does not cover my situation.",
        "Your chat bot could not help with this one.",
        "I am not sure which department is responsible for this.",
    ],
    "important": [
        "This is important for us: we close our books at the end of the week.",
        "Please treat this with priority, we have a board meeting on {date}.",
        "We are one of your larger customers and this blocks our team.",
        "I need an answer by tomorrow, otherwise we will have to cancel.",
        "Our director has asked me to get this solved this week.",
        "This affects {seats} employees, so please handle it soon.",
    ],
    "emergency": [
        "This is an emergency, please call me immediately on {phone}.",
        "Please act right now, every minute counts.",
        "URGENT: we need help within the hour.",
        "Please escalate this at once, we are losing money by the minute.",
        "I am calling the police as well, but please respond now.",
    ],
}

GREETINGS = ["Hello,", "Hi,", "Dear Support,", "Dear team,", "Good morning,", "Hi there,", ""]
CLOSINGS = ["Best regards,", "Kind regards,", "Thanks,", "Regards,", "Cheers,", "Sincerely,"]
FIRST_NAMES = [
    "Anna",
    "Ben",
    "Chloe",
    "David",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Irene",
    "Jonas",
    "Karen",
    "Liam",
    "Maria",
    "Nina",
    "Omar",
    "Priya",
    "Quentin",
    "Rosa",
]
LAST_NAMES = [
    "Smith",
    "Miller",
    "Novak",
    "Garcia",
    "Khan",
    "Schmidt",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Nguyen",
    "Patel",
    "Jensen",
    "Okafor",
    "Silva",
]
PRODUCTS = [
    "the mobile app",
    "CloudSync",
    "the web portal",
    "the router X200",
    "the desktop client",
    "SmartHub",
    "the reporting module",
    "the API",
]
ITEMS = [
    "jacket",
    "coffee machine",
    "headphones",
    "office chair",
    "monitor",
    "printer",
    "pair of shoes",
    "kettle",
    "laptop bag",
    "desk lamp",
]
CITIES = ["London", "Leeds", "Dublin", "Berlin", "Lyon", "Madrid", "Boston", "Toronto"]
STREETS = ["12 High Street", "4 Market Square", "88 Station Road", "21 Park Lane"]
QUOTE_HEADERS = [
    "On {date}, Support <support@shop.example> wrote:",
    "-----Original Message-----\nFrom: Support\nSent: {date}\nSubject: Re: your request",
]
QUOTED = [
    "> Thank you for contacting us.",
    "> We have received your request.",
    "> Please reply to this e-mail if you have further questions.",
]
MOBILE = ["Sent from my iPhone", "Sent from my Android phone"]
