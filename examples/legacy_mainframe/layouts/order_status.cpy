      *****************************************************************
      * ORDER-STATUS: request/reply records of the order-status
      * transaction (OSTA) on the legacy order system. EBCDIC (cp037).
      *****************************************************************
       01  ORDER-STATUS-REQUEST.
           05  TRAN-CODE          PIC X(4)   VALUE 'OSRQ'.
           05  ORDER-ID           PIC 9(10).
           05  FILLER             PIC X(6).
       01  ORDER-STATUS-REPLY.
           05  TRAN-CODE          PIC X(4)   VALUE 'OSRP'.
           05  ORDER-ID           PIC 9(10).
           05  FOUND              PIC X(1).
           05  STATUS             PIC X(12).
           05  ITEM               PIC X(20).
           05  CUSTOMER-ID        PIC X(8).
           05  TOTAL-USD          PIC S9(7)V99 COMP-3.
           05  BALANCE-DUE-USD    PIC S9(7)V99.
           05  DETAIL             PIC X(40).
